package sensor

import (
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// The scan of one root for the files the read rules name. Every path from
// the root is resolved inside it (RESOLVE_IN_ROOT), and below a rule's
// directory the walk goes by directory fd, one name at a time, never
// through a link: a container's links cannot point it elsewhere, or make
// its every file a secret, even by swapping a directory for a link
// mid-scan. FIFOs and devices are looked at (fstatat), never opened.
const (
	maxScanDepth = 4
	// maxEntriesPerRule bounds the entries one rule's scan looks at (a
	// hostile container can fill a watched directory), and each rule may
	// take an eighth of the root's share of the set, so that one full
	// directory leaves room for the others.
	maxEntriesPerRule = 512
	// maxInodesPerRoot is a container root's share of the kernel's set
	// (16,384 identities); the agent's own root may take all of it.
	maxInodesPerRoot = 1024
)

// inoKey is a file's identity as the BPF sees it (struct ino_key): the
// inode number and its superblock's device, in the kernel's encoding.
type inoKey struct {
	Ino uint64
	Dev uint32
	_   uint32
}

func keyOf(st *unix.Stat_t) inoKey {
	return inoKey{Ino: st.Ino, Dev: uint32(unix.Major(st.Dev))<<20 | uint32(unix.Minor(st.Dev))}
}

type rootScan struct {
	root int
	// hostDevs, for a root that is not the host's, are the devices of the
	// host's system filesystems (hostSystemDevs); nil for the host's own.
	hostDevs map[uint64]bool
	shared   []inoKey // files refused as the host's, world-readable
	budget   int      // entries this rule may still look at
	max      int      // files in all
	ruleMax  int      // files once this rule is done
	out      map[inoKey]bool
	order    []inoKey // out, in the order found (the rules' order)
	visited  map[inoKey]bool
}

// scanRoot collects the identities of the regular files the read rules
// name under a root, at most limit of them: a rule ending in '/' names the
// files below that directory (bounded depth), another one names a file
// (followed through links, inside the root), or when none has its exact
// name, the files of its directory whose names start with its last part
// (/etc/ssh/ssh_host_).
func scanRoot(root int, rules []WatchRule, limit int) map[inoKey]bool {
	return scanRootInOrder(root, rules, limit, nil).out
}

// scanRootInOrder is scanRoot, keeping the order found: the first rules'
// files (/etc/shadow) come first, and are the last a full set leaves out.
// For a root not the host's, hostDevs are hostSystemDevs.
func scanRootInOrder(root int, rules []WatchRule, limit int, hostDevs map[uint64]bool) *rootScan {
	sc := &rootScan{root: root, hostDevs: hostDevs, max: limit, out: map[inoKey]bool{}, visited: map[inoKey]bool{}}
	for _, r := range rules {
		if len(sc.out) >= limit {
			break
		}
		sc.budget, sc.ruleMax = maxEntriesPerRule, len(sc.out)+max(limit/8, 16)
		rel := strings.TrimPrefix(r.Prefix, "/")
		if strings.HasSuffix(r.Prefix, "/") {
			// The rule's own directory is not taken through a link
			// either (/root/.kube -> /usr/lib would make libraries
			// secrets); links above it are (/var/run -> /run).
			if fd, err := openIn(root, strings.TrimSuffix(rel, "/"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW); err == nil {
				sc.dir(fd, 0)
			}
			continue
		}
		if st, err := statIn(root, rel); err == nil {
			if st.Mode&unix.S_IFMT == unix.S_IFREG {
				sc.add(&st)
			}
			continue
		}
		dir, base := path.Split(rel)
		fd, err := openIn(root, strings.TrimSuffix(dir, "/"), unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			continue
		}
		sc.names(fd, func(dfd int, name string) {
			var st unix.Stat_t
			if strings.HasPrefix(name, base) && unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil &&
				st.Mode&unix.S_IFMT == unix.S_IFREG {
				sc.add(&st)
			}
		})
	}
	return sc
}

func (sc *rootScan) full() bool {
	return sc.budget <= 0 || len(sc.out) >= sc.max || len(sc.out) >= sc.ruleMax
}

func (sc *rootScan) add(st *unix.Stat_t) {
	// A world-readable file of the host's system filesystems is no
	// container's secret: it is what anyone who may make a root of their
	// own (a user namespace) can bind-mount under a secret's name, to
	// have every read of libc on the host flagged. A container's secrets
	// live on its own layers, its volumes' mounts, or are not for all.
	if sc.hostDevs[st.Dev] && st.Mode&0o004 != 0 {
		if len(sc.shared) < maxEntriesPerRule {
			sc.shared = append(sc.shared, keyOf(st))
		}
		return
	}
	if k := keyOf(st); st.Ino != 0 && !sc.full() && !sc.out[k] {
		sc.out[k] = true
		sc.order = append(sc.order, k)
	}
}

// names calls fn for each name in the directory fd (which it closes),
// charging each to the scan's budget.
func (sc *rootScan) names(fd int, fn func(dfd int, name string)) {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	for !sc.full() {
		names, err := f.Readdirnames(min(sc.budget, 256))
		for _, name := range names {
			if sc.full() {
				return
			}
			sc.budget--
			fn(fd, name)
		}
		if err != nil || len(names) == 0 {
			return
		}
	}
}

// dir adds the regular files below the directory fd (which it closes).
func (sc *rootScan) dir(fd int, depth int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || sc.visited[keyOf(&st)] {
		unix.Close(fd)
		return
	}
	sc.visited[keyOf(&st)] = true
	sc.names(fd, func(dfd int, name string) {
		var st unix.Stat_t
		if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			return
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			sc.add(&st)
		case unix.S_IFDIR:
			if depth < maxScanDepth {
				if cfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
					sc.dir(cfd, depth+1)
				}
			}
		}
	})
}

// openIn opens a path inside root, its links resolved there.
func openIn(root int, rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	return unix.Openat2(root, rel, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
}

// statIn stats a path inside root, following its links there. O_PATH
// opens nothing: a device or a FIFO is not touched.
func statIn(root int, rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := openIn(root, rel, unix.O_PATH)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, err
}

// hostSystemDirs are where a host keeps what every process reads
// (libraries, configuration, runtime state); hostSystemDevs are their
// filesystems.
var hostSystemDirs = []string{"/", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/opt", "/var", "/run", "/tmp",
	"/home", "/boot", "/srv", "/dev", "/dev/shm", "/proc", "/sys"}

// hostSystemDevs returns the devices of hostSystemDirs as seen from the
// root dirfd root (the host's).
func hostSystemDevs(root int) map[uint64]bool {
	devs := map[uint64]bool{}
	for _, d := range hostSystemDirs {
		if st, err := statIn(root, strings.TrimPrefix(d, "/")); err == nil {
			devs[st.Dev] = true
		}
	}
	return devs
}
