package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Spool errors. Both mean the message offered to Append is lost (and counted).
var (
	ErrSpoolFull  = errors.New("spool full")
	ErrSpoolWrite = errors.New("spool write failed")
	ErrClosed     = errors.New("closed")
)

// Spool defaults.
const (
	DefaultSpoolMaxBytes = 64 << 20
	minSegmentBytes      = 4 << 10
	maxSegmentBytes      = 1 << 20
	recordHeaderBytes    = 8 // u32 body length, u32 CRC-32C of body
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// SpoolConfig configures an on-disk spool.
type SpoolConfig struct {
	Dir          string // created 0700 if missing
	MaxBytes     int64  // total bytes on disk; DefaultSpoolMaxBytes when 0
	SegmentBytes int64  // segment roll size; MaxBytes/16 clamped to [4 KiB, 1 MiB] when 0
	Metrics      *Metrics
	Logger       *slog.Logger
}

// SpoolRecord is one spooled message: the envelope bytes and its JetStream
// de-duplication id.
type SpoolRecord struct {
	Kind    Kind
	DedupID string
	Data    []byte
}

// SpoolStats is a snapshot of the spool's counters.
type SpoolStats struct {
	Bytes       int64           // on disk, including delivered records of partly replayed segments
	Messages    int64           // not yet delivered
	Dropped     map[Kind]uint64 // messages lost, any reason
	WriteErrors uint64
}

// Spool is a bounded, crash-tolerant, on-disk queue of messages waiting for the
// server. Each kind appends to its own segment files (<seq>-<kind>.seg) of
// length-prefixed, CRC-checked records. When full it evicts whole segments,
// oldest first, of the least valuable kind that is not more valuable than the
// incoming message: heartbeats go first, then events, and findings last.
// Records are not fsynced one by one: a segment is synced when it is sealed
// and on Close, so a power cut can lose the newest unsealed records (a crash
// of the process alone loses nothing). Safe for concurrent use.
type Spool struct {
	cfg SpoolConfig
	m   *Metrics
	log *slog.Logger

	mu       sync.Mutex
	segs     map[Kind][]*segment // oldest first; the last may be active
	nextSeq  uint64
	bytes    int64
	msgs     int64
	dropped  map[Kind]uint64
	writeErr uint64
	closed   bool
}

type segment struct {
	seq   uint64
	kind  Kind
	path  string
	bytes int64
	count int
	acked int      // records delivered by a partial replay
	done  []bool   // which records were delivered, kept across checkouts
	f     *os.File // open while this is the kind's active segment
	busy  bool     // being replayed: not evicted, not appended to
}

// dropRank orders kinds by how readily they are dropped (lowest first).
func dropRank(k Kind) int {
	switch k {
	case KindHeartbeat:
		return 0
	case KindEvent:
		return 1
	default:
		return 2
	}
}

// OpenSpool opens (or creates) the spool in cfg.Dir and recovers the segments
// a previous run left, truncating any torn record at a segment's end.
func OpenSpool(cfg SpoolConfig) (*Spool, error) {
	if cfg.Dir == "" {
		return nil, errors.New("spool: no directory")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultSpoolMaxBytes
	}
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = min(max(cfg.MaxBytes/16, minSegmentBytes), maxSegmentBytes)
	}
	cfg.SegmentBytes = min(cfg.SegmentBytes, cfg.MaxBytes)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{cfg: cfg, m: orNewMetrics(cfg.Metrics), log: cfg.Logger,
		segs: map[Kind][]*segment{}, nextSeq: 1, dropped: map[Kind]uint64{}}
	if err := s.recover(); err != nil {
		return nil, err
	}
	s.gauges()
	return s, nil
}

func (s *Spool) recover() error {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, de := range entries {
		seqStr, rest, ok := strings.Cut(de.Name(), "-")
		kindStr, isSeg := strings.CutSuffix(rest, ".seg")
		seq, perr := strconv.ParseUint(seqStr, 10, 64)
		if !ok || !isSeg || perr != nil || !Kind(kindStr).Valid() || !de.Type().IsRegular() {
			continue
		}
		seg := &segment{seq: seq, kind: Kind(kindStr), path: filepath.Join(s.cfg.Dir, de.Name())}
		recs, good, err := readSegment(seg.path, seg.kind)
		if err != nil {
			return fmt.Errorf("spool: recover %s: %w", seg.path, err)
		}
		if fi, err := os.Stat(seg.path); err == nil && fi.Size() > good {
			s.log.Warn("spool: torn or corrupt record, truncating", "segment", seg.path, "at", good)
			s.countDrop(seg.kind, "corrupt", 1)
			if err := os.Truncate(seg.path, good); err != nil {
				return fmt.Errorf("spool: truncate %s: %w", seg.path, err)
			}
		}
		if len(recs) == 0 {
			_ = os.Remove(seg.path)
			continue
		}
		seg.bytes, seg.count = good, len(recs)
		s.segs[seg.kind] = append(s.segs[seg.kind], seg)
		s.bytes += good
		s.msgs += int64(len(recs))
		s.nextSeq = max(s.nextSeq, seq+1)
	}
	for _, list := range s.segs {
		slices.SortFunc(list, func(a, b *segment) int { return cmpU64(a.seq, b.seq) })
	}
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readSegment returns the records of a segment file and the length of its
// valid prefix. Reading stops at the first torn or corrupt record.
func readSegment(path string, kind Kind) ([]SpoolRecord, int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	var recs []SpoolRecord
	off := 0
	for len(data)-off >= recordHeaderBytes {
		n := int(binary.LittleEndian.Uint32(data[off:]))
		sum := binary.LittleEndian.Uint32(data[off+4:])
		body := data[off+recordHeaderBytes:]
		if n < 1 || n > len(body) || crc32.Checksum(body[:n], crcTable) != sum {
			break
		}
		body = body[:n]
		idLen := int(body[0])
		if 1+idLen > n {
			break
		}
		recs = append(recs, SpoolRecord{Kind: kind, DedupID: string(body[1 : 1+idLen]), Data: body[1+idLen:]})
		off += recordHeaderBytes + n
	}
	return recs, int64(off), nil
}

func encodeRecord(r SpoolRecord) []byte {
	n := 1 + len(r.DedupID) + len(r.Data)
	buf := make([]byte, recordHeaderBytes+n)
	buf[recordHeaderBytes] = byte(len(r.DedupID))
	copy(buf[recordHeaderBytes+1:], r.DedupID)
	copy(buf[recordHeaderBytes+1+len(r.DedupID):], r.Data)
	binary.LittleEndian.PutUint32(buf, uint32(n))
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(buf[recordHeaderBytes:], crcTable))
	return buf
}

// Append stores r, evicting older, less valuable segments if the spool is
// full. On ErrSpoolFull or ErrSpoolWrite the record is lost and counted.
func (s *Spool) Append(r SpoolRecord) error {
	if !r.Kind.Valid() || len(r.DedupID) > 255 {
		return fmt.Errorf("spool: invalid record (kind %q)", r.Kind)
	}
	buf := encodeRecord(r)
	size := int64(len(buf))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if size > s.cfg.MaxBytes {
		s.countDrop(r.Kind, "full", 1)
		return fmt.Errorf("%w: record of %d bytes exceeds the spool's %d", ErrSpoolFull, size, s.cfg.MaxBytes)
	}
	for s.bytes+size > s.cfg.MaxBytes {
		if !s.evictOne(r.Kind, "full") {
			s.countDrop(r.Kind, "full", 1)
			return fmt.Errorf("%w: %d of %d bytes hold more valuable messages", ErrSpoolFull, s.bytes, s.cfg.MaxBytes)
		}
	}
	err := s.write(r.Kind, buf)
	for tries := 0; err != nil; tries++ {
		s.countWriteErr()
		// When the disk fills before our own bound does, make room by the
		// same rules as for the bound and try again.
		if !errors.Is(err, syscall.ENOSPC) || tries == 4 || !s.evictOne(r.Kind, "disk_full") {
			break
		}
		err = s.write(r.Kind, buf)
	}
	if err != nil {
		s.countDrop(r.Kind, "write_error", 1)
		s.log.Warn("spool: write failed, message dropped", "kind", r.Kind, "err", err)
		return fmt.Errorf("%w: %w", ErrSpoolWrite, err)
	}
	s.bytes += size
	s.msgs++
	s.gauges()
	return nil
}

// write appends buf to kind's active segment, rolling to a new one when the
// active one is full. A failed write is truncated away so no torn record remains.
func (s *Spool) write(kind Kind, buf []byte) error {
	seg := s.active(kind)
	if seg != nil && seg.bytes+int64(len(buf)) > s.cfg.SegmentBytes {
		s.seal(seg)
		seg = nil
	}
	if seg == nil {
		seg = &segment{seq: s.nextSeq, kind: kind,
			path: filepath.Join(s.cfg.Dir, fmt.Sprintf("%016d-%s.seg", s.nextSeq, kind))}
		f, err := os.OpenFile(seg.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("create segment: %w", err)
		}
		s.nextSeq++
		seg.f = f
		s.segs[kind] = append(s.segs[kind], seg)
	}
	if _, err := seg.f.Write(buf); err != nil {
		if terr := seg.f.Truncate(seg.bytes); terr != nil {
			// Cannot undo a torn record: seal here so recovery truncates it later.
			s.seal(seg)
		}
		if seg.count == 0 {
			s.removeSegment(seg)
		}
		return fmt.Errorf("append to %s: %w", seg.path, err)
	}
	seg.bytes += int64(len(buf))
	seg.count++
	return nil
}

// active returns kind's segment open for appending, if any.
func (s *Spool) active(kind Kind) *segment {
	list := s.segs[kind]
	if n := len(list); n > 0 && list[n-1].f != nil {
		return list[n-1]
	}
	return nil
}

// seal syncs and closes an active segment; it will not be appended to again.
func (s *Spool) seal(seg *segment) {
	if seg.f == nil {
		return
	}
	if err := seg.f.Sync(); err != nil {
		s.log.Warn("spool: sync failed", "segment", seg.path, "err", err)
	}
	_ = seg.f.Close()
	seg.f = nil
}

// evictOne deletes the oldest idle segment of the most droppable kind that is
// no more valuable than incoming. It reports whether anything was evicted.
func (s *Spool) evictOne(incoming Kind, reason string) bool {
	for _, k := range []Kind{KindHeartbeat, KindEvent, KindFinding} {
		if dropRank(k) > dropRank(incoming) {
			break
		}
		for _, seg := range s.segs[k] {
			if seg.busy {
				continue
			}
			s.countDrop(k, reason, uint64(seg.count-seg.acked))
			s.log.Warn("spool: full, dropping oldest segment", "reason", reason, "kind", k, "messages", seg.count-seg.acked)
			s.removeSegment(seg)
			return true
		}
	}
	return false
}

func (s *Spool) removeSegment(seg *segment) {
	if seg.f != nil {
		_ = seg.f.Close()
		seg.f = nil
	}
	if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("spool: remove segment", "segment", seg.path, "err", err)
	}
	list := s.segs[seg.kind]
	if i := slices.Index(list, seg); i >= 0 {
		s.segs[seg.kind] = slices.Delete(list, i, i+1)
		s.bytes -= seg.bytes
		s.msgs -= int64(seg.count - seg.acked)
	}
	s.gauges()
}

func (s *Spool) countWriteErr() {
	s.writeErr++
	s.m.SpoolWriteErr.Inc()
}

func (s *Spool) countDrop(k Kind, reason string, n uint64) {
	if n == 0 {
		return
	}
	s.dropped[k] += n
	s.m.SpoolDropped.WithLabelValues(string(k), reason).Add(float64(n))
}

func (s *Spool) gauges() {
	s.m.SpoolBytes.Set(float64(s.bytes))
	s.m.SpoolMessages.Set(float64(s.msgs))
}

// SpoolBatch is one segment checked out for replay.
type SpoolBatch struct {
	s       *Spool
	seg     *segment
	Records []SpoolRecord
}

// Checkout hands out the oldest segment of the most valuable kind that has
// one (findings first, heartbeats last) for replay, or nil when the spool
// is empty. An active segment is sealed first, so new records go elsewhere.
// The caller must Commit or Release the batch.
func (s *Spool) Checkout() (*SpoolBatch, error) {
	s.mu.Lock()
	var seg *segment
	for _, k := range Kinds {
		for _, sg := range s.segs[k] {
			if !sg.busy {
				seg = sg
				break
			}
		}
		if seg != nil {
			break
		}
	}
	if seg == nil || s.closed {
		s.mu.Unlock()
		return nil, nil
	}
	s.seal(seg)
	seg.busy = true
	s.mu.Unlock()

	recs, _, err := readSegment(seg.path, seg.kind)
	if err != nil {
		s.mu.Lock()
		seg.busy = false
		s.mu.Unlock()
		return nil, fmt.Errorf("spool: read %s: %w", seg.path, err)
	}
	s.mu.Lock()
	if len(seg.done) != len(recs) {
		s.msgs += int64(seg.acked)
		seg.done, seg.acked = make([]bool, len(recs)), 0
	}
	s.mu.Unlock()
	return &SpoolBatch{s: s, seg: seg, Records: recs}, nil
}

// Kind is the kind of every record in the batch.
func (b *SpoolBatch) Kind() Kind { return b.seg.kind }

// Delivered marks record i as acknowledged by the server, so a later retry of
// this batch skips it.
func (b *SpoolBatch) Delivered(i int) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if !b.seg.done[i] {
		b.seg.done[i] = true
		b.seg.acked++
		b.s.msgs--
		b.s.gauges()
	}
}

// IsDelivered reports whether record i was marked delivered.
func (b *SpoolBatch) IsDelivered(i int) bool {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	return b.seg.done[i]
}

// Commit deletes the segment if every record was delivered, otherwise it
// releases it for a later retry. It reports whether the segment is gone.
func (b *SpoolBatch) Commit() bool {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	b.seg.busy = false
	if b.seg.acked < len(b.Records) {
		return false
	}
	b.s.removeSegment(b.seg)
	return true
}

// Stats returns a snapshot of the spool's counters.
func (s *Spool) Stats() SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SpoolStats{Bytes: s.bytes, Messages: s.msgs, WriteErrors: s.writeErr,
		Dropped: make(map[Kind]uint64, len(s.dropped))}
	for k, v := range s.dropped {
		st.Dropped[k] = v
	}
	return st
}

// Close syncs and closes the active segments. Further Appends fail with ErrClosed.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, list := range s.segs {
		for _, seg := range list {
			s.seal(seg)
		}
	}
	return nil
}
