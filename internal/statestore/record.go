package statestore

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Records are encoded by hand with encoding/binary varints, not JSON:
//
//   - Exactness: encoding/json replaces invalid UTF-8 with U+FFFD, and run
//     names, statuses and fail reasons must come back byte for byte.
//   - Size and speed: a typical run is ~200 bytes and decodes with two
//     allocations (one string holding all its text, one Run), so a restart
//     reads 100k runs in tens of milliseconds; JSON would be larger and
//     several times slower.
//
// Each value starts with a CRC-32C of the rest. bbolt checksums only its meta
// pages: without it a flipped bit in a leaf page would silently change a run,
// and a cleared Counted flag would count the run a second time.
//
// Absent values cost nothing: zero timestamps, a nil Run, an ID equal to its
// key are a flag bit, not bytes. The format is version 1 (schemaVersion);
// an unknown flag bit is an error, so a record from a newer format is never
// half read.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Flag bits of a state record. Format 2 added the bits from fQueuedSeen
// on; a format-1 record has none of them and reads the same.
const (
	fFetchOK = 1 << iota
	fCounted // Verdict runs.Counted
	fRetired
	fID    // State.ID differs from its key (not lower-case): stored
	fRun   // State.Run is not nil
	fRunID // Run.ID differs from State.ID: stored
	fHasProgress
	fProgress // Run.Progress is not zero: 8 bytes follow
	fLastSuccess
	fNotFoundSince
	fStatusSince
	fProgressUpdated
	fFinishedSeen
	fCreatedAt
	fFinishedAt
	fQueuedSeen
	fLeftQueue
	fSeenUnfinished
	fNotCounted // Verdict runs.NotCounted

	fAll    = 1<<iota - 1
	fRunAll = fRunID | fHasProgress | fProgress | fCreatedAt | fFinishedAt
)

var errRecord = errors.New("malformed record")

// appendState appends the record of st, stored under key, to b.
func appendState(b []byte, key string, st *runs.State) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0) // CRC, filled in last

	var f uint64
	set := func(bit uint64, on bool) {
		if on {
			f |= bit
		}
	}
	set(fFetchOK, st.FetchOK)
	set(fCounted, st.Verdict == runs.Counted)
	set(fNotCounted, st.Verdict == runs.NotCounted)
	set(fSeenUnfinished, st.SeenUnfinished)
	set(fRetired, st.Retired)
	set(fID, st.ID != key)
	set(fLastSuccess, !st.LastSuccess.IsZero())
	set(fNotFoundSince, !st.NotFoundSince.IsZero())
	set(fStatusSince, !st.StatusSince.IsZero())
	set(fProgressUpdated, !st.ProgressUpdated.IsZero())
	set(fFinishedSeen, !st.FinishedSeen.IsZero())
	set(fQueuedSeen, !st.QueuedSeen.IsZero())
	set(fLeftQueue, !st.LeftQueue.IsZero())
	r := st.Run
	if r != nil {
		f |= fRun
		set(fRunID, r.ID != st.ID)
		set(fHasProgress, r.HasProgress)
		set(fProgress, r.Progress != 0 || math.Signbit(r.Progress))
		set(fCreatedAt, !r.CreatedAt.IsZero())
		set(fFinishedAt, !r.FinishedAt.IsZero())
	}
	b = binary.AppendUvarint(b, f)

	if f&fID != 0 {
		b = appendString(b, st.ID)
	}
	b = appendString(b, st.FailReason)
	b = appendTime(b, f&fLastSuccess, st.LastSuccess)
	b = appendTime(b, f&fNotFoundSince, st.NotFoundSince)
	b = appendTime(b, f&fStatusSince, st.StatusSince)
	b = appendTime(b, f&fProgressUpdated, st.ProgressUpdated)
	b = appendTime(b, f&fFinishedSeen, st.FinishedSeen)
	b = appendTime(b, f&fQueuedSeen, st.QueuedSeen)
	b = appendTime(b, f&fLeftQueue, st.LeftQueue)
	if r != nil {
		if f&fRunID != 0 {
			b = appendString(b, r.ID)
		}
		b = appendString(b, r.GroupID)
		b = appendString(b, r.WorkflowID)
		b = appendString(b, r.WorkflowName)
		b = appendString(b, r.WorkflowType)
		b = appendString(b, r.Source)
		b = appendString(b, string(r.Status))
		if f&fProgress != 0 {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(r.Progress))
		}
		b = appendTime(b, f&fCreatedAt, r.CreatedAt)
		b = appendTime(b, f&fFinishedAt, r.FinishedAt)
	}
	binary.LittleEndian.PutUint32(b[start:], crc32.Checksum(b[start+4:], castagnoli))
	return b
}

// decodeState decodes a record stored under key. v may be bbolt's memory,
// valid only within its transaction: nothing of it is kept.
func decodeState(key string, v []byte) (runs.State, error) {
	d, err := newDecoder(v)
	if err != nil {
		return runs.State{}, err
	}
	f := d.uvarint()
	if f&^fAll != 0 || (f&fRun == 0 && f&fRunAll != 0) || (f&fCounted != 0 && f&fNotCounted != 0) {
		return runs.State{}, errRecord
	}
	st := runs.State{
		ID:             key,
		FetchOK:        f&fFetchOK != 0,
		Retired:        f&fRetired != 0,
		SeenUnfinished: f&fSeenUnfinished != 0,
	}
	switch {
	case f&fCounted != 0:
		st.Verdict = runs.Counted
	case f&fNotCounted != 0:
		st.Verdict = runs.NotCounted
	}
	if f&fID != 0 {
		st.ID = d.string()
	}
	st.FailReason = d.string()
	st.LastSuccess = d.time(f & fLastSuccess)
	st.NotFoundSince = d.time(f & fNotFoundSince)
	st.StatusSince = d.time(f & fStatusSince)
	st.ProgressUpdated = d.time(f & fProgressUpdated)
	st.FinishedSeen = d.time(f & fFinishedSeen)
	st.QueuedSeen = d.time(f & fQueuedSeen)
	st.LeftQueue = d.time(f & fLeftQueue)
	if f&fRun != 0 {
		r := &runs.Run{ID: st.ID, HasProgress: f&fHasProgress != 0}
		if f&fRunID != 0 {
			r.ID = d.string()
		}
		r.GroupID = d.string()
		r.WorkflowID = d.string()
		r.WorkflowName = d.string()
		r.WorkflowType = d.string()
		r.Source = d.string()
		r.Status = runs.Status(d.string())
		if f&fProgress != 0 {
			r.Progress = math.Float64frombits(d.uint64())
		}
		r.CreatedAt = d.time(f & fCreatedAt)
		r.FinishedAt = d.time(f & fFinishedAt)
		st.Run = r
	}
	if err := d.end(); err != nil {
		return runs.State{}, err
	}
	return st, nil
}

// storedCounted reports whether a stored record says its run was counted,
// without decoding the rest.
func storedCounted(v []byte) (bool, error) {
	d, err := newDecoder(v)
	if err != nil {
		return false, err
	}
	f := d.uvarint()
	return f&fCounted != 0, d.err
}

// appendTotalKey appends the bbolt key of a lifecycle total: three
// length-prefixed strings, so no name can be mistaken for another.
func appendTotalKey(b []byte, k runs.TotalKey) []byte {
	b = appendString(b, k.WorkflowName)
	b = appendString(b, k.WorkflowType)
	return appendString(b, string(k.Status))
}

func decodeTotalKey(v []byte) (runs.TotalKey, error) {
	d := decoder{s: string(v)}
	k := runs.TotalKey{WorkflowName: d.string(), WorkflowType: d.string(), Status: runs.Status(d.string())}
	return k, d.end()
}

func appendTotal(b []byte, t *runs.Total) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b = binary.AppendUvarint(b, t.Runs)
	b = appendHistogram(b, t.Duration)
	binary.LittleEndian.PutUint32(b[start:], crc32.Checksum(b[start+4:], castagnoli))
	return b
}

// appendHistogram appends a histogram: count, sum, the classic buckets,
// then the native zero bucket and the native buckets in index order (the
// native part was added in format 2; see decodeHistogram).
func appendHistogram(b []byte, h *runs.Histogram) []byte {
	b = binary.AppendUvarint(b, h.Count)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(h.Sum))
	b = binary.AppendUvarint(b, uint64(len(h.Buckets)))
	for _, n := range h.Buckets {
		b = binary.AppendUvarint(b, n)
	}
	b = binary.AppendUvarint(b, h.ZeroCount)
	keys := slices.Sorted(maps.Keys(h.Native))
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = binary.AppendVarint(b, int64(k))
		b = binary.AppendUvarint(b, h.Native[k])
	}
	return b
}

// appendWorkflowKey appends the bbolt key of a queue-wait total.
func appendWorkflowKey(b []byte, k runs.WorkflowKey) []byte {
	b = appendString(b, k.WorkflowName)
	return appendString(b, k.WorkflowType)
}

func decodeWorkflowKey(v []byte) (runs.WorkflowKey, error) {
	d := decoder{s: string(v)}
	k := runs.WorkflowKey{WorkflowName: d.string(), WorkflowType: d.string()}
	return k, d.end()
}

func appendQueueWait(b []byte, h *runs.Histogram) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b = appendHistogram(b, h)
	binary.LittleEndian.PutUint32(b[start:], crc32.Checksum(b[start+4:], castagnoli))
	return b
}

func decodeQueueWait(v []byte) (*runs.Histogram, error) {
	d, err := newDecoder(v)
	if err != nil {
		return nil, err
	}
	h := d.histogram()
	return h, d.end()
}

func decodeTotal(v []byte) (*runs.Total, error) {
	d, err := newDecoder(v)
	if err != nil {
		return nil, err
	}
	t := &runs.Total{Runs: d.uvarint()}
	t.Duration = d.histogram()
	return t, d.end()
}

// histogram reads what appendHistogram wrote. A record of format 1 ends
// after the classic buckets; its native buckets are made from them, each
// bucket's count put in the native bucket of its upper bound, so the two
// forms keep the same count (Prometheus refuses a native histogram whose
// buckets do not add up to its count). Only the spread of those old
// observations is approximate.
func (d *decoder) histogram() *runs.Histogram {
	h := runs.NewHistogram()
	h.Count, h.Sum = d.uvarint(), math.Float64frombits(d.uint64())
	// The bucket layout was checked against runs.DurationBuckets at Open; a
	// record with another length is damaged.
	if n := d.uvarint(); n != uint64(len(h.Buckets)) {
		d.fail()
		return h
	}
	for i := range h.Buckets {
		h.Buckets[i] = d.uvarint()
	}
	if d.err == nil && d.i == len(d.s) {
		for i, n := range h.Buckets {
			if n == 0 {
				continue
			}
			bound := 2 * runs.DurationBuckets[len(runs.DurationBuckets)-1]
			if i < len(runs.DurationBuckets) {
				bound = runs.DurationBuckets[i]
			}
			h.Native[runs.NativeBucket(bound)] += n
		}
		return h
	}
	h.ZeroCount = d.uvarint()
	n := d.uvarint()
	if n > uint64(len(d.s)-d.i) {
		d.fail()
		return h
	}
	for range n {
		k, c := d.varint(), d.uvarint()
		h.Native[int(k)] = c
	}
	return h
}

// appendBounds encodes histogram bucket bounds for the meta bucket.
func appendBounds(b []byte, bounds []float64) []byte {
	b = binary.AppendUvarint(b, uint64(len(bounds)))
	for _, x := range bounds {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendTime appends t when present is not zero. Seconds and nanoseconds
// are stored apart so every time.Time round-trips, not only those within
// UnixNano's years 1678 to 2262.
func appendTime(b []byte, present uint64, t time.Time) []byte {
	if present == 0 {
		return b
	}
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

// decoder reads a record. The first error sticks and later reads return
// zero values, so a decode function reads straight through and checks once.
type decoder struct {
	// s is the whole record as one string: every string decoded from it is
	// a substring, one allocation for all of them.
	s   string
	i   int
	err error
}

// newDecoder checks v's CRC and returns a decoder for the rest.
func newDecoder(v []byte) (decoder, error) {
	if len(v) < 4 || binary.LittleEndian.Uint32(v) != crc32.Checksum(v[4:], castagnoli) {
		return decoder{}, errRecord
	}
	return decoder{s: string(v[4:])}, nil
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errRecord
	}
	d.i = len(d.s)
}

func (d *decoder) uvarint() uint64 {
	var x uint64
	for shift := uint(0); ; shift += 7 {
		if d.i >= len(d.s) || shift > 63 {
			d.fail()
			return 0
		}
		c := d.s[d.i]
		d.i++
		if shift == 63 && c > 1 {
			d.fail()
			return 0
		}
		x |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return x
		}
	}
}

func (d *decoder) varint() int64 {
	ux := d.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

func (d *decoder) uint64() uint64 {
	if len(d.s)-d.i < 8 {
		d.fail()
		return 0
	}
	var x uint64
	for j := 7; j >= 0; j-- {
		x = x<<8 | uint64(d.s[d.i+j])
	}
	d.i += 8
	return x
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.s)-d.i) {
		d.fail()
		return ""
	}
	s := d.s[d.i : d.i+int(n)]
	d.i += int(n)
	return s
}

func (d *decoder) time(present uint64) time.Time {
	if present == 0 {
		return time.Time{}
	}
	sec, nsec := d.varint(), d.uvarint()
	if nsec >= 1e9 {
		d.fail()
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// end reports the first error, or trailing bytes: a record is read whole.
func (d *decoder) end() error {
	if d.err == nil && d.i != len(d.s) {
		d.err = errRecord
	}
	return d.err
}
