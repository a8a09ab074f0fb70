package sensor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Record layout (bpf/include/mamori.h, struct event_hdr), little endian.
const (
	offTS      = 0
	offCgroup  = 8
	offStart   = 16
	offPStart  = 24
	offRet     = 32
	offKind    = 40
	offFlags   = 44
	offPID     = 48
	offTID     = 52
	offNSPID   = 56
	offPPID    = 60
	offUID     = 64
	offGID     = 68
	offEUID    = 72
	offEGID    = 76
	offNStr    = 80
	offStrRev  = 84
	offComm    = 88
	offArgs    = 104
	hdrSize    = 168
	maxStrings = 16
	flagTrunc  = 1 << 0
	flagInode  = 1 << 2 // F_BY_INODE
	flagStdio  = 1 << 3 // F_STDIO_INET
	flagNew    = 1 << 4 // F_CREATED
)

// record is a decoded kernel record before it becomes an event: the header
// fields plus the string table, all still raw.
type record struct {
	ts, cgroup, start, pstart uint64
	ret                       int64
	kind, flags               uint32
	pid, tid, nspid, ppid     uint32
	uid, gid, euid, egid      uint32
	comm                      string
	args                      [8]uint64
	strs                      [maxStrings][]byte
	nstr                      int
}

var errShort = errors.New("record shorter than its header")

// parseRecord validates and splits one ring-buffer sample. Every length
// comes from the kernel, but it is still checked: a malformed record is an
// error, never a panic.
func parseRecord(b []byte, r *record) error {
	if len(b) < hdrSize {
		return errShort
	}
	le := binary.LittleEndian
	r.ts = le.Uint64(b[offTS:])
	r.cgroup = le.Uint64(b[offCgroup:])
	r.start = le.Uint64(b[offStart:])
	r.pstart = le.Uint64(b[offPStart:])
	r.ret = int64(le.Uint64(b[offRet:]))
	r.kind = le.Uint32(b[offKind:])
	r.flags = le.Uint32(b[offFlags:])
	r.pid = le.Uint32(b[offPID:])
	r.tid = le.Uint32(b[offTID:])
	r.nspid = le.Uint32(b[offNSPID:])
	r.ppid = le.Uint32(b[offPPID:])
	r.uid = le.Uint32(b[offUID:])
	r.gid = le.Uint32(b[offGID:])
	r.euid = le.Uint32(b[offEUID:])
	r.egid = le.Uint32(b[offEGID:])
	nstr := le.Uint32(b[offNStr:])
	rev := le.Uint32(b[offStrRev:])
	comm := b[offComm : offComm+16]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	r.comm = string(comm)
	for i := range r.args {
		r.args[i] = le.Uint64(b[offArgs+8*i:])
	}
	if nstr > maxStrings {
		return fmt.Errorf("record declares %d strings (max %d)", nstr, maxStrings)
	}
	r.nstr = int(nstr)
	rest := b[hdrSize:]
	for i := 0; i < r.nstr; i++ {
		if len(rest) < 2 {
			return fmt.Errorf("string %d: length prefix past end of record", i)
		}
		n := int(le.Uint16(rest))
		rest = rest[2:]
		if n > len(rest) {
			return fmt.Errorf("string %d: length %d past end of record (%d left)", i, n, len(rest))
		}
		s := rest[:n:n]
		if rev&(1<<uint(i)) != 0 {
			s = reversePath(s)
		}
		r.strs[i] = s
		rest = rest[n:]
	}
	for i := r.nstr; i < maxStrings; i++ {
		r.strs[i] = nil
	}
	return nil
}

// str returns string i, or "" when the kernel did not send it.
func (r *record) str(i int) string {
	if i >= r.nstr {
		return ""
	}
	return string(r.strs[i])
}

// reversePath turns the kernel's leaf-first walk "c/b/a/" into "/a/b/c".
// A walk that produced nothing is the root itself.
func reversePath(walk []byte) []byte {
	if len(walk) == 0 {
		return []byte("/")
	}
	walk = bytes.TrimSuffix(walk, []byte("/"))
	out := make([]byte, 0, len(walk)+1)
	// Components from the last to the first, without splitting: this runs
	// for two paths of every exec.
	for end := len(walk); ; {
		start := bytes.LastIndexByte(walk[:end], '/') + 1
		out = append(out, '/')
		out = append(out, walk[start:end]...)
		if start == 0 {
			return out
		}
		end = start - 1
	}
}

// splitNUL splits a NUL-separated block (argv) into strings. The parts
// share one string: two allocations per exec instead of one per argument.
func splitNUL(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// eachNUL calls fn with each part of a NUL-separated block (environ)
// without copying any: most of an environment is looked at, not kept.
func eachNUL(b []byte, fn func(part []byte)) {
	for len(b) > 0 {
		part := b
		if i := bytes.IndexByte(b, 0); i >= 0 {
			part, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(part) > 0 {
			fn(part)
		}
	}
}
