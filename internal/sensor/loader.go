package sensor

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// sharedMaps are created once and handed to every object, so all hook
// families write into one ring buffer and one set of counters.
var sharedMaps = []string{"events", "drops", "emitted", "config_map"}

// familyMaps are per-family maps user space writes (configuration) or
// reads (counters).
var familyMaps = []string{"watch_paths", "watch_roots", "links_learned", "watch_inodes", "watch_ino_bits"}

// HookStatus says whether one BPF program is in use, and if not, why.
type HookStatus struct {
	Program  string `json:"program"`
	Family   string `json:"family"`
	Hook     string `json:"hook"` // section, e.g. tp_btf/sched_process_exec
	Attached bool   `json:"attached"`
	Optional bool   `json:"optional,omitempty"`
	Error    string `json:"error,omitempty"`
	// DetachedAt is when the hook was last found detached by another
	// process (and re-attached); Detaches counts such findings.
	DetachedAt time.Time `json:"detachedAt,omitzero"`
	Detaches   int       `json:"detaches,omitempty"`
}

// family is one compiled BPF object (one bpf/*.bpf.c file), in its two
// builds: load for kernels with every helper the programs use, compat for
// those without (see bpf/include/mamori.h and Variant).
type family struct {
	name   string
	load   func() (*ebpf.CollectionSpec, error)
	compat func() (*ebpf.CollectionSpec, error)
}

// Options configure the sensor.
type Options struct {
	// CgroupRoot is the cgroup v2 mount used for cgroup hooks; empty
	// means detect it.
	CgroupRoot string
	// RingBufferBytes overrides the ring buffer size (power of two pages).
	RingBufferBytes uint32
	// Only limits loading to these families (for tests); empty loads all.
	Only []string
	// DNSPorts are the server ports DNS is read on, at most MaxDNSPorts;
	// empty means 53.
	DNSPorts []uint16
	// Logger receives load/attach diagnostics.
	Logger *slog.Logger
	// Compat loads the objects built for older kernels even where the
	// newer helpers exist (tests prove them on this kernel with it).
	Compat bool
}

// MaxDNSPorts is how many DNS ports the sensor can watch (the kernel side
// compares each packet's port with a fixed array).
const MaxDNSPorts = 4

// CheckDNSPorts refuses a port list the kernel side cannot hold.
func CheckDNSPorts(ports []uint16) error {
	if len(ports) > MaxDNSPorts {
		return fmt.Errorf("dns ports: %d given, at most %d", len(ports), MaxDNSPorts)
	}
	for _, p := range ports {
		if p == 0 {
			return errors.New("dns ports: port 0")
		}
	}
	return nil
}

// Sensor owns the loaded programs, their links and the shared maps.
type Sensor struct {
	opts  Options
	log   *slog.Logger
	maps  map[string]*ebpf.Map
	colls []*ebpf.Collection
	links []link.Link
	// variant is which build of the objects is loaded.
	variant Variant
	// held are the attached hooks integrity checks look after.
	held   []*heldHook
	mu     sync.Mutex
	status []HookStatus
	cgroup string
	stats  readStats
	// inodes keeps the kernel's read-watched inode numbers (nil without
	// the file family).
	inodes *inodeWatch
}

// Load creates the shared maps, loads every program family and attaches
// each program. A program that fails is recorded in Status, not fatal; Load
// fails only when nothing at all could be attached or the shared maps could
// not be created.
func Load(opts Options) (*Sensor, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	if err := ensureMounts(); err != nil {
		log.Warn("mount kernel filesystems", "err", err)
	}
	if err := CheckDNSPorts(opts.DNSPorts); err != nil {
		return nil, err
	}
	s := &Sensor{opts: opts, log: log, maps: map[string]*ebpf.Map{}}
	if s.cgroup = opts.CgroupRoot; s.cgroup == "" {
		s.cgroup = CgroupV2Root()
	}
	s.variant = ChooseVariant(opts.Compat)
	switch {
	case opts.Compat && !ChooseVariant(false).Compat:
		// On 6.1+ the VMA tree the compat objects walk is gone.
		log.Warn("BPF objects for older kernels forced on a kernel that does not need them: on Linux 6.1+ anonymous memory made executable is not flagged")
	case s.variant.Compat:
		log.Info("BPF objects for older kernels in use", "why", s.variant.Why)
	case s.variant.Why != "":
		log.Warn("default BPF objects in use without a complete helper probe", "why", s.variant.Why)
	}
	for _, fam := range families() {
		if len(opts.Only) > 0 && !contains(opts.Only, fam.name) {
			continue
		}
		if s.variant.Compat {
			fam.load = fam.compat
		}
		if err := s.loadFamily(fam); err != nil {
			s.Close()
			return nil, err
		}
	}
	s.inodes = newInodeWatch(log, s.maps)
	if s.inodes != nil {
		s.inodes.cgroupRoot = s.cgroup
	}
	if _, ok := s.maps["watch_paths"]; ok {
		if err := s.SetWatch(DefaultWatch); err != nil {
			s.Close()
			return nil, err
		}
	}
	if err := s.writeConfig(); err != nil {
		s.Close()
		return nil, err
	}
	attached := 0
	for _, st := range s.status {
		if st.Attached {
			attached++
		}
	}
	if attached == 0 {
		s.Close()
		return nil, fmt.Errorf("no BPF program could be attached: %s", s.firstError())
	}
	return s, nil
}

func (s *Sensor) firstError() string {
	for _, st := range s.status {
		if st.Error != "" {
			return st.Program + ": " + st.Error
		}
	}
	return "no programs"
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func (s *Sensor) loadFamily(fam family) error {
	spec, err := fam.load()
	if err != nil {
		return fmt.Errorf("load %s spec: %w", fam.name, err)
	}
	if rb, ok := spec.Maps["events"]; ok && s.opts.RingBufferBytes > 0 {
		rb.MaxEntries = s.opts.RingBufferBytes
	}
	// Create the shared maps once, from the first family that has them.
	for _, name := range sharedMaps {
		if _, done := s.maps[name]; done {
			continue
		}
		ms, ok := spec.Maps[name]
		if !ok {
			continue
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			return fmt.Errorf("create shared map %s: %w", name, err)
		}
		s.maps[name] = m
	}
	// Load the family's own maps once, then each program on its own so one
	// verifier refusal cannot take the others down.
	mapsOnly := &ebpf.CollectionSpec{Maps: spec.Maps, Programs: map[string]*ebpf.ProgramSpec{}}
	repl := map[string]*ebpf.Map{}
	for _, name := range sharedMaps {
		if _, ok := spec.Maps[name]; ok {
			repl[name] = s.maps[name]
		}
	}
	mcoll, err := ebpf.NewCollectionWithOptions(mapsOnly, ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		return fmt.Errorf("create %s maps: %w", fam.name, err)
	}
	s.colls = append(s.colls, mcoll)
	for _, name := range familyMaps {
		if m, ok := mcoll.Maps[name]; ok {
			s.maps[name] = m
		}
	}
	all := map[string]*ebpf.Map{}
	for name, m := range mcoll.Maps {
		all[name] = m
	}
	for name, m := range repl {
		all[name] = m
	}
	if coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: all}); err == nil {
		// Fast path: the whole family loads at once; attach each program.
		s.colls = append(s.colls, coll)
		return s.attachAll(fam, spec, coll)
	}
	for _, name := range slices.Sorted(maps.Keys(spec.Programs)) {
		ps := spec.Programs[name]
		st := hookStatus(fam, name, ps)
		one := &ebpf.CollectionSpec{Maps: spec.Maps, Programs: map[string]*ebpf.ProgramSpec{name: ps}}
		coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{MapReplacements: all})
		if err != nil {
			st.Error = "load: " + shortVerifierError(err)
			s.log.Warn("BPF program not loaded", "program", name, "err", err)
			s.status = append(s.status, st)
			continue
		}
		s.colls = append(s.colls, coll)
		s.attachOne(fam, ps, coll.Programs[name], st)
	}
	return nil
}

// attachAll attaches every program of a family loaded in one collection.
func (s *Sensor) attachAll(fam family, spec *ebpf.CollectionSpec, coll *ebpf.Collection) error {
	for _, name := range slices.Sorted(maps.Keys(spec.Programs)) {
		ps := spec.Programs[name]
		st := hookStatus(fam, name, ps)
		s.attachOne(fam, ps, coll.Programs[name], st)
	}
	return nil
}

func (s *Sensor) attachOne(fam family, ps *ebpf.ProgramSpec, prog *ebpf.Program, st HookStatus) {
	name := ps.Name
	{
		l, err := s.attach(prog, ps)
		if errors.Is(err, os.ErrNotExist) {
			// The kernel lacks this hook (e.g. no module support means no
			// init_module tracepoints): coverage narrows, nothing is broken.
			st.Optional = true
			st.Error = "not available on this kernel: " + err.Error()
		} else if err != nil {
			st.Error = "attach: " + err.Error()
			s.log.Warn("BPF program not attached", "program", name, "hook", ps.SectionName, "err", err)
		} else {
			st.Attached = true
			s.links = append(s.links, l)
			s.held = append(s.held, &heldHook{status: len(s.status), link: l, prog: prog, spec: ps})
		}
		s.status = append(s.status, st)
	}
}

// isOptional marks hooks whose absence only narrows coverage (a syscall that
// does not exist on this architecture, say).
func isOptional(section string) bool {
	for _, p := range []string{"sys_enter_open", "sys_exit_open", "sys_enter_creat", "sys_exit_creat",
		"sys_enter_rename", "sys_exit_rename", "sys_enter_link", "sys_exit_link", "sys_enter_symlink", "sys_exit_symlink",
		"sys_enter_unlink", "sys_exit_unlink", "sys_enter_chmod", "sys_exit_chmod", "sys_enter_chown", "sys_exit_chown",
		"sys_enter_lchown", "sys_exit_lchown", "sys_enter_dup2", "sys_exit_dup2"} {
		if strings.HasSuffix(section, "/"+p) {
			return true
		}
	}
	return false
}

// helperSince names the helpers the programs use that came late, with
// the Linux release that brought them: "invalid func unknown#158" alone
// tells an operator nothing.
var helperSince = map[asm.BuiltinFunc]string{
	asm.FnRingbufOutput: "5.8", asm.FnRingbufReserve: "5.8", asm.FnRingbufSubmit: "5.8", asm.FnRingbufQuery: "5.8",
	asm.FnSkStorageGet: "5.2", asm.FnKtimeGetBootNs: "5.8", asm.FnGetCurrentTaskBtf: "5.11",
	asm.FnTaskPtRegs: "5.15", asm.FnFindVma: "5.17", asm.FnLoop: "5.17",
}

var unknownHelper = regexp.MustCompile(`invalid func unknown#(\d+)`)

// kernelTooOld turns the verifier's complaints about what an older kernel
// lacks into the reason: which helper or feature, since which Linux.
func kernelTooOld(msg string) string {
	if m := unknownHelper.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		fn := asm.BuiltinFunc(n)
		name := helperName(fn)
		if v, ok := helperSince[fn]; ok {
			return fmt.Sprintf("kernel too old: it lacks the BPF helper %s (Linux %s+)", name, v)
		}
		return fmt.Sprintf("kernel too old: it lacks the BPF helper %s", name)
	}
	if strings.Contains(msg, "number of funcs in func_info doesn't match number of subprogs") {
		return "kernel too old: it cannot load BPF callbacks (bpf_loop, Linux 5.17+)"
	}
	return ""
}

// snake turns a Go-style helper name (GetCurrentTaskBtf) into the C one.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

func shortVerifierError(err error) string {
	if why := kernelTooOld(err.Error()); why != "" {
		return why
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		for _, l := range ve.Log {
			if why := kernelTooOld(l); why != "" {
				return why
			}
		}
		lines := ve.Log
		if len(lines) > 3 {
			lines = lines[len(lines)-3:]
		}
		return fmt.Sprintf("verifier: %s", strings.Join(lines, " | "))
	}
	return err.Error()
}

// attach picks the attach mechanism from the program's section name.
func (s *Sensor) attach(prog *ebpf.Program, ps *ebpf.ProgramSpec) (link.Link, error) {
	sec := ps.SectionName
	kind, rest, _ := strings.Cut(sec, "/")
	switch kind {
	case "tp_btf":
		return link.AttachTracing(link.TracingOptions{Program: prog})
	case "tracepoint", "tp":
		group, name, ok := strings.Cut(rest, "/")
		if !ok {
			return nil, fmt.Errorf("bad tracepoint section %q", sec)
		}
		return link.Tracepoint(group, name, prog, nil)
	case "raw_tracepoint", "raw_tp":
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: rest, Program: prog})
	case "cgroup_skb", "cgroup":
		if s.cgroup == "" {
			return nil, errors.New("no cgroup v2 hierarchy mounted")
		}
		return link.AttachCgroup(link.CgroupOptions{Path: s.cgroup, Attach: ps.AttachType, Program: prog})
	}
	return nil, fmt.Errorf("no attach rule for section %q", sec)
}

// writeConfig writes the programs' settings: the agent's own pid (its
// syscalls are not reported), enabled (the map starts zeroed, which keeps
// every program silent until the sensor is set up), and the DNS ports.
func (s *Sensor) writeConfig() error {
	m, ok := s.maps["config_map"]
	if !ok {
		return errors.New("config map missing")
	}
	// struct config in bpf/include/mamori.h.
	cfg := struct {
		SelfPID  uint32
		Enabled  uint32
		DNSPorts [MaxDNSPorts]uint16
	}{SelfPID: uint32(os.Getpid()), Enabled: 1}
	s.mu.Lock()
	copy(cfg.DNSPorts[:], s.opts.DNSPorts)
	s.mu.Unlock()
	if err := m.Put(uint32(0), cfg); err != nil {
		return fmt.Errorf("write sensor config: %w", err)
	}
	return nil
}

// SetDNSPorts changes the ports DNS is read on (empty: 53).
func (s *Sensor) SetDNSPorts(ports []uint16) error {
	if err := CheckDNSPorts(ports); err != nil {
		return err
	}
	s.mu.Lock()
	s.opts.DNSPorts = slices.Clone(ports)
	s.mu.Unlock()
	return s.writeConfig()
}

// Status lists every program with whether it is attached and why not.
func (s *Sensor) Status() []HookStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]HookStatus(nil), s.status...)
}

// Close detaches everything and frees the maps.
func (s *Sensor) Close() error {
	// Each detach waits for an RCU grace period in the kernel; closing the
	// links side by side turns ~100 sequential waits into a few.
	var wg sync.WaitGroup
	work := make(chan link.Link)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l := range work {
				_ = l.Close()
			}
		}()
	}
	s.mu.Lock() // VerifyHooks may be swapping links
	links := s.links
	s.links, s.held = nil, nil
	s.mu.Unlock()
	for _, l := range links {
		work <- l
	}
	close(work)
	wg.Wait()
	for _, c := range s.colls {
		c.Close()
	}
	s.colls = nil
	for _, name := range sharedMaps {
		if m, ok := s.maps[name]; ok {
			_ = m.Close()
		}
	}
	s.maps = map[string]*ebpf.Map{}
	return nil
}

// ensureMounts mounts tracefs and bpffs when absent: tracepoint attachment
// reads event ids from tracefs.
func ensureMounts() error {
	var errs []error
	if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
		if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
			errs = append(errs, fmt.Errorf("mount tracefs: %w", err))
		}
	}
	if !isMountOf("/sys/fs/bpf", "bpf") {
		if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, ""); err != nil {
			errs = append(errs, fmt.Errorf("mount bpffs: %w", err))
		}
	}
	return errors.Join(errs...)
}

func isMountOf(target, fstype string) bool {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == target && f[2] == fstype {
			return true
		}
	}
	return false
}

// CgroupV2Root finds the cgroup v2 mount: /sys/fs/cgroup on a pure v2 host,
// /sys/fs/cgroup/unified on a hybrid one.
func CgroupV2Root() string {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == "cgroup2" {
			return f[1]
		}
	}
	return ""
}
