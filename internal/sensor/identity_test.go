package sensor

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/testenv"
)

func inoOf(t *testing.T, p string) inoKey {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return keyOf(&st)
}

// TestScanRootStaysInside: the scan of a container's root names the files
// the read rules name there — following the container's links inside its
// root, never out to the agent's — and only regular files, within bounds.
func TestScanRootStaysInside(t *testing.T) {
	root := t.TempDir()
	mk := func(rel string) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	want := map[inoKey]string{}
	for _, rel := range []string{"etc/shadow", "root/.ssh/id_rsa", "root/.ssh/sub/deep", "etc/ssh/ssh_host_rsa_key",
		"etc/ssh/ssh_host_ed25519_key", "run/secrets/kubernetes.io/serviceaccount/..2026_12_07/token"} {
		want[inoOf(t, mk(rel))] = rel
	}
	// Files a rule names exactly are followed through links, inside the
	// root: an absolute target, and one climbing out, land in it.
	want[inoOf(t, mk("etc/docker-inside"))] = "root/.docker/config.json -> /etc/docker-inside"
	want[inoOf(t, mk("etc/passwd"))] = "etc/gshadow -> ../../../../../../../../etc/passwd"
	notWanted := map[inoKey]string{inoOf(t, mk("etc/ssh/ssh_config")): "etc/ssh/ssh_config", inoOf(t, mk("etc/group")): "etc/group"}
	// Hostile links: to a file, out of the root, to a directory.
	for link, target := range map[string]string{
		"root/.docker/config.json": "/etc/docker-inside",
		"etc/gshadow":              "../../../../../../../../etc/passwd",
		"root/.ssh/abs":            "/etc/group",
		"root/.ssh/up":             "../../../../../../../../etc/passwd",
		"root/.aws/dir":            "/etc",
		"run/secrets/kubernetes.io/serviceaccount/..data": "..2026_12_07",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, link)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	// A FIFO is not a file to watch, and the scan must not block on it.
	if err := unix.Mkfifo(filepath.Join(root, "root/.ssh/fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory a hostile container filled: it takes its rule's share
	// of the root's quota (an eighth), and leaves the others theirs.
	for i := range 600 {
		mk("root/.kube/f" + strconv.Itoa(i))
	}

	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	const quota = 800
	got := scanRoot(fd, readRules(DefaultWatch), quota)
	if len(got) != quota/8+len(want) {
		t.Errorf("%d files watched, want the filled directory's share %d and the %d others", len(got), quota/8, len(want))
	}

	for ino, rel := range want {
		if !got[ino] {
			t.Errorf("%s not watched", rel)
		}
	}
	// Links below a rule's directory are not followed: their targets (the
	// root's own /etc, or the agent's) are no secrets for being linked.
	for _, p := range []string{"/etc/passwd", "/etc/shadow"} {
		if ino := inoOf(t, p); got[ino] && ino != inoOf(t, filepath.Join(root, p)) {
			t.Errorf("the agent's %s is watched through a link in the scanned root", p)
		}
	}
	for ino, rel := range notWanted {
		if got[ino] {
			t.Errorf("%s watched", rel)
		}
	}
	// A tree wider than a rule's budget costs no more than it: every
	// entry is charged, directories too.
	deep := t.TempDir()
	p := deep
	for i := range 3 {
		p = filepath.Join(p, "d"+strconv.Itoa(i))
		for j := range maxEntriesPerRule / 2 {
			if err := os.MkdirAll(filepath.Join(p, "x"+strconv.Itoa(j)), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(deep, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(deep, "d0"), filepath.Join(deep, "root", ".ssh")); err != nil {
		t.Fatal(err)
	}
	dfd, err := unix.Open(deep, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	sc := &rootScan{root: dfd, budget: maxEntriesPerRule, max: quota, ruleMax: quota, out: map[inoKey]bool{}, visited: map[inoKey]bool{}}
	if fd, err := openIn(dfd, "root/.ssh", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW); err == nil {
		sc.dir(fd, 0)
	}
	if sc.budget != 0 {
		t.Errorf("a wide tree left %d of the scan's budget: not charged", sc.budget)
	}
}

// TestInoBitSpreads: the prefilter's bit for an inode number is the one
// the BPF computes (bpf/file.bpf.c ino_watched), within the array.
func TestInoBitSpreads(t *testing.T) {
	seen := map[[2]uint32]bool{}
	for ino := uint64(1); ino <= 1000; ino++ {
		w, b := inoBit(ino)
		if w >= inoBitsWords || b >= 64 {
			t.Fatalf("ino %d: word %d bit %d out of range", ino, w, b)
		}
		seen[[2]uint32{w, b}] = true
	}
	// Consecutive numbers (files made together) must not share bits.
	if len(seen) < 990 {
		t.Errorf("1,000 consecutive inode numbers take %d bits", len(seen))
	}
	// h = (ino * 0x9E3779B97F4A7C15) >> 48, word h>>6, bit h&63.
	if w, b := inoBit(737); w != uint32((737*0x9E3779B97F4A7C15)>>54)%inoBitsWords || b != uint32((737*0x9E3779B97F4A7C15)>>48)&63 {
		t.Errorf("inoBit(737) = %d, %d", w, b)
	}
}

// TestSetTakesTheHostFirst: when the kernel's set is full, the files left
// out are a container's, never the agent's own root's — whatever order
// the roots are kept in, and also when the host's files change after
// containers filled the set — and each container keeps its first files
// (its scan finds /etc/shadow first) however many another one has.
func TestSetTakesTheHostFirst(t *testing.T) {
	testenv.RequireBPF(t)
	keys := func(dev uint32, from, n int) []inoKey {
		var l []inoKey
		for i := range n {
			l = append(l, inoKey{Ino: uint64(from + i), Dev: dev})
		}
		return l
	}
	for round := range 16 {
		hash, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 16, ValueSize: 4, MaxEntries: 5})
		if err != nil {
			t.Fatal(err)
		}
		bits, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8 * (inoBitsWords + 1), MaxEntries: 1})
		if err != nil {
			t.Fatal(err)
		}
		w := newInodeWatch(slog.Default(), map[string]*ebpf.Map{"watch_inodes": hash, "watch_ino_bits": bits})
		own, big, small := rootID{dev: 1, ino: 2}, rootID{dev: 9, ino: 2}, rootID{dev: 8, ino: 2}
		w.own = own
		host := keys(1, 100, 3)
		// Both orders of insertion, so that map order cannot hide a bias.
		ids := []rootID{big, small, own}
		if round%2 == 1 {
			ids = []rootID{own, small, big}
		}
		for _, id := range ids {
			switch id {
			case own:
				w.roots[id] = &watchedRoot{inodes: host}
			case big:
				w.roots[id] = &watchedRoot{inodes: keys(9, 200, 50)}
			case small:
				w.roots[id] = &watchedRoot{inodes: keys(8, 300, 2)}
			}
		}
		var one uint32
		check := func(when string, host []inoKey) {
			t.Helper()
			for _, k := range host {
				if err := hash.Lookup(k, &one); err != nil {
					t.Fatalf("round %d, %s: the host's file %d left out of a full set: %v", round, when, k.Ino, err)
				}
			}
			for _, first := range []inoKey{{Ino: 200, Dev: 9}, {Ino: 300, Dev: 8}} {
				if err := hash.Lookup(first, &one); err != nil {
					t.Errorf("round %d, %s: a container's first file (%d) left out for another's many: %v", round, when, first.Ino, err)
				}
			}
			if got, left := w.watched.Load(), w.notWatched.Load(); got != 5 || left != 50 {
				t.Errorf("round %d, %s: %d watched, %d left out; want 5 and 50", round, when, got, left)
			}
		}
		w.sync()
		check("first sync", host)
		// passwd gives the host's /etc/shadow a new inode, once the set
		// is full of containers' files.
		changed := append([]inoKey{{Ino: 999, Dev: 1}}, host[1:]...)
		w.mu.Lock()
		w.roots[own] = &watchedRoot{inodes: changed}
		w.mu.Unlock()
		w.sync()
		check("after the host's file changed", changed)
		if err := hash.Lookup(host[0], &one); err == nil {
			t.Errorf("round %d: the host's replaced file is still in the set", round)
		}
		hash.Close()
		bits.Close()
	}
}
