package intel

// builtinList is the name the built-in indicators carry.
const builtinList = "mamori-builtin-test-indicators"

// builtin are the conventional public test domains of the reference
// product: harmless names that exist to demonstrate intel findings. The
// most specific listed suffix wins, so crypto.guarddutyc2activityb.com is
// a crypto-currency indicator while the apex is command-and-control.
var builtin = []struct {
	domain string
	family Family
}{
	{"guarddutyc2activityb.com", CommandAndControl},
	{"c2.guarddutyc2activityb.com", CommandAndControl},
	{"crypto.guarddutyc2activityb.com", CryptoCurrency},
	{"abused-rep.guarddutyc2activityb.com", AbusedReputation},
	{"crypto-rep.guarddutyc2activityb.com", BitcoinReputation},
	{"malicious-rep.guarddutyc2activityb.com", MaliciousReputation},
	{"suspicious-rep.guarddutyc2activityb.com", SuspiciousReputation},
	{"guarddutyblackholeactivity.com", BlackHole},
	{"guarddutydroppointactivity.com", DropPoint},
	{"guarddutydgaactivity.com", DGA},
	{"guarddutydrivebyactivity.com", DriveBy},
	{"guarddutyphishingactivity.com", Phishing},
}

func addBuiltin(b *Builder) {
	for _, e := range builtin {
		b.Add(e.domain, Match{Family: e.family, List: builtinList, Name: "test indicator"})
	}
}
