package proc

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// userNames maps uids to names per mount namespace: a container has its
// own /etc/passwd, read through /proc/PID/root. Files are attacker-owned
// inside containers, so reads are capped and lines parsed defensively.
type userNames struct {
	root string
	mu   sync.Mutex
	byNS map[string]passwd
}

type passwd struct {
	names map[uint32]string
	read  time.Time
}

const (
	maxPasswdBytes = 1 << 20
	maxNamespaces  = 1024
	passwdTTL      = time.Minute
)

func newUserNames(procRoot string) *userNames {
	return &userNames{root: procRoot, byNS: map[string]passwd{}}
}

// name returns the user name of uid as the process pid (child of ppid)
// sees it, or "" when it has none.
func (u *userNames) name(pid, ppid uint32, uid uint32) string {
	// A process already gone (a /bin/true that ran for a millisecond) is
	// looked up in its parent's namespace, the same as a rule; failing
	// that, in the agent's own, the host's (not pid 1's, whose root some
	// machines do not let even root read).
	var dir, ns string
	for _, who := range []string{strconv.FormatUint(uint64(pid), 10), strconv.FormatUint(uint64(ppid), 10), "self"} {
		if who == "0" {
			continue
		}
		d := filepath.Join(u.root, who)
		if n, err := os.Readlink(filepath.Join(d, "ns", "mnt")); err == nil {
			dir, ns = d, n
			break
		}
	}
	if dir == "" {
		return ""
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	p, ok := u.byNS[ns]
	if !ok || time.Since(p.read) > passwdTTL {
		if len(u.byNS) >= maxNamespaces {
			u.byNS = map[string]passwd{}
		}
		names, ok := readPasswd(filepath.Join(dir, "root", "etc", "passwd"))
		p = passwd{names: names, read: time.Now()}
		// A process that exited mid-read says nothing about its namespace:
		// only a file actually read is remembered.
		if ok {
			u.byNS[ns] = p
		}
	}
	return p.names[uid]
}

func readPasswd(path string) (map[uint32]string, bool) {
	names := map[uint32]string{}
	f, err := os.Open(path)
	if err != nil {
		return names, false
	}
	defer f.Close()
	sc := bufio.NewScanner(&limited{r: f, n: maxPasswdBytes})
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), ":", 4)
		if len(fields) < 3 || fields[0] == "" {
			continue
		}
		id, err := strconv.ParseUint(fields[2], 10, 32)
		if err != nil {
			continue
		}
		if _, dup := names[uint32(id)]; !dup {
			names[uint32(id)] = fields[0]
		}
	}
	return names, true
}

type limited struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, os.ErrClosed
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
