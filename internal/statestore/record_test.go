package statestore

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Whatever the bytes, decoding returns a state or an error, never a panic.
func FuzzDecodeState(f *testing.F) {
	st, _ := finishedState(1, 1)
	f.Add(st.ID, appendState(nil, st.ID, &st))
	f.Add("x", appendState(nil, "x", &runs.State{ID: "X", FailReason: "timeout"}))
	f.Add("", []byte{})
	f.Fuzz(func(t *testing.T, key string, b []byte) {
		_, _ = decodeState(key, b)
		_, _ = storedCounted(b)
		_, _ = decodeTotal(b)
		_, _ = decodeTotalKey(b)
	})
}

// Any state comes back as it was stored (instants in UTC).
func FuzzStateRoundTrip(f *testing.F) {
	f.Add("3c90c3cc-0d44-4b50-8888-8dd25736052a", "name \"q\"\n\xff", "running", int64(1700000000), uint32(123), 42.5, uint32(0xffff))
	f.Add("ABC", "", "", int64(-62135596800), uint32(0), math.NaN(), uint32(0))
	f.Add("q", "n", "queued", int64(1700000000), uint32(1), 1.0, uint32(0x1f0ff))
	f.Fuzz(func(t *testing.T, id, name, status string, sec int64, nsec uint32, progress float64, bits uint32) {
		sec %= 1 << 40 // within time.Time's range with room to spare
		tm := time.Unix(sec, int64(nsec%1e9)).UTC()
		on := func(i int) bool { return bits&(1<<i) != 0 }
		at := func(i int) time.Time {
			if on(i) {
				return tm.Add(time.Duration(i))
			}
			return time.Time{}
		}
		st := runs.State{
			ID: id, FetchOK: on(0), Verdict: verdictOf(on(1)), Retired: on(2), FailReason: name,
			LastSuccess: at(3), NotFoundSince: at(4), StatusSince: at(5), ProgressUpdated: at(6), FinishedSeen: at(7),
			QueuedSeen: at(12), LeftQueue: at(13), SeenUnfinished: on(14),
		}
		if on(15) {
			st.Verdict = runs.NotCounted
		}
		if on(8) {
			st.Run = &runs.Run{
				ID: keyOf(id), GroupID: name, WorkflowID: id, WorkflowName: name, WorkflowType: status, Source: name,
				Status: runs.Status(status), Progress: progress, HasProgress: on(9), CreatedAt: at(10), FinishedAt: at(11),
			}
		}
		key := keyOf(id)
		got, err := decodeState(key, appendState(nil, key, &st))
		if err != nil {
			t.Fatal(err)
		}
		if got.Run != nil && st.Run != nil && math.Float64bits(got.Run.Progress) != math.Float64bits(st.Run.Progress) {
			t.Fatalf("progress %v came back as %v", st.Run.Progress, got.Run.Progress)
		}
		if got.Run != nil && st.Run != nil {
			// NaN != NaN: compared by bits above.
			got.Run.Progress, st.Run.Progress = 0, 0
		}
		if !reflect.DeepEqual(got, st) {
			t.Fatalf("round trip changed the state\n got %#v\nwant %#v", got, st)
		}
	})
}

// A record of another format (an unknown flag bit) or with trailing bytes
// is refused, not half read.
func TestDecodeRefuses(t *testing.T) {
	st, _ := finishedState(1, 1)
	good := appendState(nil, st.ID, &st)
	cases := map[string][]byte{
		"empty":          nil,
		"bad checksum":   append(append([]byte(nil), good[:len(good)-1]...), good[len(good)-1]^1),
		"unknown flag":   reCRC(append([]byte{0, 0, 0, 0, 0x80, 0x80, 0x04}, good[5:]...)),
		"trailing bytes": reCRC(append(append([]byte(nil), good...), 0)),
		"cut short":      reCRC(append([]byte(nil), good[:len(good)-3]...)),
	}
	for name, b := range cases {
		if _, err := decodeState(st.ID, b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := decodeState(st.ID, good); err != nil {
		t.Errorf("good record: %v", err)
	}
}

// reCRC sets the checksum of a hand-made record.
func reCRC(b []byte) []byte {
	binary.LittleEndian.PutUint32(b, crc32.Checksum(b[4:], castagnoli))
	return b
}

func verdictOf(counted bool) runs.Verdict {
	if counted {
		return runs.Counted
	}
	return runs.Undecided
}
