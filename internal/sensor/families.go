package sensor

// families lists the compiled hook families in load order. The first one
// creates the shared maps.
func families() []family {
	return []family{
		{name: "process", load: loadProcess},
		{name: "file", load: loadFile},
		{name: "net", load: loadNet},
		{name: "priv", load: loadPriv},
		{name: "dns", load: loadDns},
	}
}
