package container

// A minimal, read-only reader for bbolt database files. podman (libpod's
// bolt_state.db) and containerd (io.containerd.metadata.v1.bolt/meta.db)
// keep container labels and image references only there. Opening those files
// with a bolt library would take the runtime's file lock and could stall the
// runtime, so we read pages directly without locking. A runtime may be
// writing while we read: every offset and length is bounds-checked and the
// page budget caps work, so a torn or hostile file yields an error, never a
// panic or an endless walk.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

const (
	boltMagic        = 0xED0CDAED
	boltPageHeader   = 16
	boltElemSize     = 16
	boltBranchPage   = 0x01
	boltLeafPage     = 0x02
	boltBucketLeaf   = 0x01
	boltMaxDepth     = 32
	boltMaxPageBytes = 16 << 20
	// boltPageBudget bounds the pages one open database may read, so a
	// corrupted tree with cycles cannot keep the resolver busy.
	boltPageBudget = 20000
)

var errBoltCorrupt = errors.New("bolt: corrupt or concurrently rewritten file")

type boltDB struct {
	r        io.ReaderAt
	size     int64
	pageSize int64
	root     uint64
	budget   int
}

// openBoltFile opens path and returns the database and a close function.
func openBoltFile(path string) (*boltDB, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	db, err := openBolt(f, st.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return db, func() { f.Close() }, nil
}

// openBolt picks the newer of the two valid meta pages, as bolt does.
func openBolt(r io.ReaderAt, size int64) (*boltDB, error) {
	hdr := make([]byte, 4096)
	n, err := r.ReadAt(hdr, 0)
	if n < boltPageHeader+64 {
		return nil, fmt.Errorf("bolt: short header: %v", err)
	}
	m0, ok0 := parseBoltMeta(hdr[boltPageHeader:n])
	// When the first meta page is mid-write its page size cannot be
	// trusted; bolt files use the OS page size, so look there for the second.
	ps := int64(os.Getpagesize())
	if ok0 {
		ps = int64(m0.pageSize)
	}
	if ps < 512 || ps > 65536 {
		return nil, errBoltCorrupt
	}
	buf := make([]byte, boltPageHeader+64)
	var m1 boltMeta
	ok1 := false
	if n1, _ := r.ReadAt(buf, ps); n1 == len(buf) {
		m1, ok1 = parseBoltMeta(buf[boltPageHeader:])
		ok1 = ok1 && int64(m1.pageSize) == ps
	}
	m := m0
	switch {
	case ok0 && ok1:
		if m1.txid > m0.txid {
			m = m1
		}
	case ok1:
		m = m1
	case !ok0:
		return nil, errBoltCorrupt
	}
	return &boltDB{r: r, size: size, pageSize: int64(m.pageSize), root: m.root, budget: boltPageBudget}, nil
}

type boltMeta struct {
	pageSize uint32
	root     uint64
	txid     uint64
}

func parseBoltMeta(b []byte) (boltMeta, bool) {
	if len(b) < 64 {
		return boltMeta{}, false
	}
	le := binary.LittleEndian
	m := boltMeta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), txid: le.Uint64(b[48:])}
	if le.Uint32(b[0:]) != boltMagic || le.Uint32(b[4:]) != 2 {
		return m, false
	}
	h := fnv.New64a()
	h.Write(b[:56])
	return m, h.Sum64() == le.Uint64(b[56:])
}

// page reads page id including its overflow pages.
func (db *boltDB) page(id uint64) ([]byte, error) {
	if db.budget <= 0 {
		return nil, fmt.Errorf("bolt: page budget exhausted")
	}
	db.budget--
	off := int64(id) * db.pageSize
	if id == 0 || off/db.pageSize != int64(id) || off < 0 || off+db.pageSize > db.size {
		return nil, errBoltCorrupt
	}
	hdr := make([]byte, boltPageHeader)
	if _, err := db.r.ReadAt(hdr, off); err != nil {
		return nil, err
	}
	overflow := int64(binary.LittleEndian.Uint32(hdr[12:]))
	n := (overflow + 1) * db.pageSize
	if n > boltMaxPageBytes || off+n > db.size {
		return nil, errBoltCorrupt
	}
	p := make([]byte, n)
	if _, err := db.r.ReadAt(p, off); err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint64(p) != id {
		return nil, errBoltCorrupt
	}
	return p, nil
}

// boltBucket is a bucket: either rooted at a page or inline in its parent's value.
type boltBucket struct {
	db     *boltDB
	root   uint64
	inline []byte
}

func (db *boltDB) rootBucket() boltBucket { return boltBucket{db: db, root: db.root} }

// boltElem is one element of a page: a key with either a child page
// (branch) or a value (leaf).
type boltElem struct {
	key, val []byte
	child    uint64
	bucket   bool
}

// elems decodes a page's elements with every offset checked.
func boltElems(p []byte) (flags uint16, out []boltElem, err error) {
	if len(p) < boltPageHeader {
		return 0, nil, errBoltCorrupt
	}
	le := binary.LittleEndian
	flags = le.Uint16(p[8:])
	count := int(le.Uint16(p[10:]))
	if boltPageHeader+count*boltElemSize > len(p) {
		return 0, nil, errBoltCorrupt
	}
	out = make([]boltElem, 0, count)
	for i := 0; i < count; i++ {
		e := boltPageHeader + i*boltElemSize
		switch {
		case flags&boltBranchPage != 0:
			pos, ks := int(le.Uint32(p[e:])), int(le.Uint32(p[e+4:]))
			start := e + pos
			if pos < 0 || ks < 0 || start < e || start+ks > len(p) {
				return 0, nil, errBoltCorrupt
			}
			out = append(out, boltElem{key: p[start : start+ks], child: le.Uint64(p[e+8:])})
		case flags&boltLeafPage != 0:
			fl := le.Uint32(p[e:])
			pos, ks, vs := int(le.Uint32(p[e+4:])), int(le.Uint32(p[e+8:])), int(le.Uint32(p[e+12:]))
			start := e + pos
			if pos < 0 || ks < 0 || vs < 0 || start < e || start+ks+vs > len(p) || start+ks+vs < start {
				return 0, nil, errBoltCorrupt
			}
			out = append(out, boltElem{key: p[start : start+ks], val: p[start+ks : start+ks+vs], bucket: fl&boltBucketLeaf != 0})
		default:
			return 0, nil, errBoltCorrupt
		}
	}
	return flags, out, nil
}

// walk calls fn for every leaf element, in key order.
func (b boltBucket) walk(fn func(boltElem) error) error {
	if b.root == 0 {
		return b.walkPage(b.inline, 0, fn)
	}
	return b.walkID(b.root, 0, fn)
}

func (b boltBucket) walkID(id uint64, depth int, fn func(boltElem) error) error {
	p, err := b.db.page(id)
	if err != nil {
		return err
	}
	return b.walkPage(p, depth, fn)
}

func (b boltBucket) walkPage(p []byte, depth int, fn func(boltElem) error) error {
	if depth > boltMaxDepth {
		return errBoltCorrupt
	}
	flags, elems, err := boltElems(p)
	if err != nil {
		return err
	}
	for _, e := range elems {
		if flags&boltBranchPage != 0 {
			if err := b.walkID(e.child, depth+1, fn); err != nil {
				return err
			}
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

var errStopWalk = errors.New("stop")

// get finds key by descending the tree; branch keys are each child's first key.
func (b boltBucket) get(key string) (boltElem, bool, error) {
	k := []byte(key)
	p := b.inline
	if b.root != 0 {
		var err error
		if p, err = b.db.page(b.root); err != nil {
			return boltElem{}, false, err
		}
	}
	for depth := 0; depth <= boltMaxDepth; depth++ {
		flags, elems, err := boltElems(p)
		if err != nil {
			return boltElem{}, false, err
		}
		if flags&boltLeafPage != 0 {
			for _, e := range elems {
				if bytes.Equal(e.key, k) {
					return e, true, nil
				}
			}
			return boltElem{}, false, nil
		}
		next := -1
		for i, e := range elems {
			if bytes.Compare(e.key, k) <= 0 {
				next = i
			}
		}
		if next < 0 {
			return boltElem{}, false, nil
		}
		if p, err = b.db.page(elems[next].child); err != nil {
			return boltElem{}, false, err
		}
	}
	return boltElem{}, false, errBoltCorrupt
}

// value returns the plain value stored under key.
func (b boltBucket) value(key string) ([]byte, bool, error) {
	e, ok, err := b.get(key)
	if err != nil || !ok || e.bucket {
		return nil, false, err
	}
	return e.val, true, nil
}

// sub opens the nested bucket named key.
func (b boltBucket) sub(key string) (boltBucket, bool, error) {
	e, ok, err := b.get(key)
	if err != nil || !ok || !e.bucket {
		return boltBucket{}, false, err
	}
	if len(e.val) < 16 {
		return boltBucket{}, false, errBoltCorrupt
	}
	nb := boltBucket{db: b.db, root: binary.LittleEndian.Uint64(e.val)}
	if nb.root == 0 {
		nb.inline = e.val[16:]
	}
	return nb, true, nil
}

// subPath opens nested buckets along names.
func (b boltBucket) subPath(names ...string) (boltBucket, bool, error) {
	cur := b
	for _, n := range names {
		next, ok, err := cur.sub(n)
		if err != nil || !ok {
			return boltBucket{}, false, err
		}
		cur = next
	}
	return cur, true, nil
}

// stringMap reads a bucket of plain string values (containerd's labels),
// capped at max entries.
func (b boltBucket) stringMap(max int) (map[string]string, error) {
	out := map[string]string{}
	err := b.walk(func(e boltElem) error {
		if e.bucket {
			return nil
		}
		if len(out) >= max {
			return errStopWalk
		}
		out[string(e.key)] = string(e.val)
		return nil
	})
	if err == errStopWalk {
		err = nil
	}
	return out, err
}
