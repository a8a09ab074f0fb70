package container

import (
	"sync"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// TestConcurrentUse runs lookups, notifications and the resolver at once
// (meaningful under -race).
func TestConcurrentUse(t *testing.T) {
	testenv.RequireRoot(t)
	root := testRoot(t)
	store := newFakeStorage(t)
	tbl := startTable(t, Options{CgroupRoot: root, PodmanRoot: store.root, PodmanRunRoot: store.root,
		SettleTimeout: 20 * time.Millisecond, RemovedTTL: 50 * time.Millisecond, Capacity: 64,
		OnLifecycle: func(*event.Event) {}})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := uint64(0); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tbl.Lookup(1<<40 + i%200)
				_ = tbl.Stats()
				_ = tbl.Containers()
			}
		}(g)
	}
	for i := uint64(0); i < 2000; i++ {
		id := 1<<40 + i%200
		tbl.OnCgroupMkdir(id, "/mamori-race/libpod-"+hexA[:60]+string("0123456789abcdef"[i%16])+"abc")
		if i%3 == 0 {
			tbl.OnCgroupRmdir(id)
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if st := tbl.Stats(); st.Cgroups > 64 {
		t.Fatalf("capacity exceeded: %+v", st)
	}
}

func BenchmarkLookupKnown(b *testing.B) {
	testenv.RequireRoot(b)
	tbl, err := New(Options{CgroupRoot: testRoot(b)})
	if err != nil {
		b.Fatal(err)
	}
	tbl.OnCgroupMkdir(42, "/system.slice/x.service")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, known := tbl.Lookup(42); !known {
				b.Fatal("not known")
			}
		}
	})
}
