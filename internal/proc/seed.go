package proc

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// procInfo is what /proc says of one process.
type procInfo struct {
	pid, ppid, nspid uint32
	uid, euid        uint32
	startTicks       uint64
	name, exe, cwd   string
	args             []string
}

// readProc reads one process's stat, status, exe, cwd and cmdline. Every
// field is attacker-influenced (a process names itself), so parsing is
// defensive: the command name in stat may hold spaces and parentheses.
func readProc(root string, pid uint32) (procInfo, error) {
	dir := filepath.Join(root, strconv.FormatUint(uint64(pid), 10))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return procInfo{}, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	s := procInfo{pid: pid}
	open, close := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
	if open < 0 || close < open {
		return procInfo{}, fmt.Errorf("parse stat of %d: no command name", pid)
	}
	s.name = string(stat[open+1 : close])
	f := strings.Fields(string(stat[close+1:]))
	// After the name: state(0) ppid(1) ... starttime is field 22 of stat, index 19 here.
	if len(f) < 20 {
		return procInfo{}, fmt.Errorf("parse stat of %d: %d fields", pid, len(f))
	}
	ppid, _ := strconv.ParseUint(f[1], 10, 32)
	s.ppid = uint32(ppid)
	s.startTicks, _ = strconv.ParseUint(f[19], 10, 64)
	if status, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch k {
			case "Uid":
				ids := strings.Fields(v)
				if len(ids) >= 2 {
					u, _ := strconv.ParseUint(ids[0], 10, 32)
					eu, _ := strconv.ParseUint(ids[1], 10, 32)
					s.uid, s.euid = uint32(u), uint32(eu)
				}
			case "NSpid":
				ids := strings.Fields(v)
				if len(ids) > 0 {
					n, _ := strconv.ParseUint(ids[len(ids)-1], 10, 32)
					s.nspid = uint32(n)
				}
			}
		}
	}
	s.exe, _ = os.Readlink(filepath.Join(dir, "exe"))
	s.cwd, _ = os.Readlink(filepath.Join(dir, "cwd"))
	if cmd, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && len(cmd) > 0 {
		s.args = strings.Split(strings.TrimSuffix(string(cmd), "\x00"), "\x00")
	}
	return s, nil
}

// Seed fills the table from /proc, so processes older than the agent have
// UUIDs and lineage. Kernel threads are included: they are parents too.
func (t *Table) Seed() error {
	ents, err := os.ReadDir(t.opts.ProcRoot)
	if err != nil {
		return fmt.Errorf("seed process table: %w", err)
	}
	infos := map[uint32]procInfo{}
	for _, d := range ents {
		pid, err := strconv.ParseUint(d.Name(), 10, 32)
		if err != nil {
			continue
		}
		if s, err := readProc(t.opts.ProcRoot, uint32(pid)); err == nil {
			infos[uint32(pid)] = s
		}
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for pid, s := range infos {
		if len(t.byPID) >= t.opts.Capacity {
			break
		}
		if _, ok := t.byPID[pid]; ok {
			continue // an event already described it
		}
		e := &entry{
			pid: pid, nspid: s.nspid, ppid: s.ppid, startTicks: s.startTicks,
			uuid: t.uuidTicks(pid, s.startTicks), name: s.name, exe: s.exe, cwd: s.cwd, args: s.args,
			uid: s.uid, euid: s.euid, seen: now,
			start: t.opts.BootTime.Add(time.Duration(s.startTicks) * (time.Second / ticksPerSecond)),
		}
		if pp, ok := infos[s.ppid]; ok {
			e.parentUUID = t.uuidTicks(s.ppid, pp.startTicks)
		}
		e.user = t.users.name(pid, s.ppid, s.uid)
		t.insertLocked(e)
		t.seeded.Add(1)
	}
	return nil
}

// bootTime is the wall-clock instant of boot, for boot-relative times.
func bootTime() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}
	}
	return time.Now().Add(-time.Duration(ts.Nano()))
}

// oldestSeen returns the last-seen time at or before which n entries lie.
func oldestSeen(m map[uint32]*entry, n int) time.Time {
	ts := make([]time.Time, 0, len(m))
	for _, e := range m {
		ts = append(ts, e.seen)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	if n <= 0 || len(ts) == 0 {
		return time.Time{}
	}
	if n > len(ts) {
		n = len(ts)
	}
	return ts[n-1]
}
