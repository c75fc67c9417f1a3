package shard

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func uuids(n int) []string {
	rng := rand.New(rand.NewPCG(7, 8))
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), rng.IntN(1<<12), rng.Uint64()>>16)
	}
	return out
}

// TestEveryIDHasExactlyOneShard, whatever the order of the IDs, and the
// shards are about even.
func TestEveryIDHasExactlyOneShard(t *testing.T) {
	ids := uuids(3000)
	for _, count := range []int{1, 2, 3, 7} {
		owners := map[string]int{}
		for i := range count {
			a, err := New(i, count)
			if err != nil {
				t.Fatal(err)
			}
			shuffled := slices.Clone(ids)
			rand.Shuffle(len(shuffled), func(x, y int) { shuffled[x], shuffled[y] = shuffled[y], shuffled[x] })
			got := a.Filter(shuffled)
			if n := len(got); n < len(ids)/count*8/10 || n > len(ids)/count*12/10 {
				t.Errorf("count %d: shard %d owns %d of %d IDs, far from even", count, i, n, len(ids))
			}
			for _, id := range got {
				owners[id]++
			}
		}
		for _, id := range ids {
			if owners[id] != 1 {
				t.Fatalf("count %d: %s owned by %d shards", count, id, owners[id])
			}
		}
	}
}

// TestAssignmentIsStable pins the hash to Prometheus' hashmod: the values
// below were computed apart from this code (Python's hashlib: the last 8
// bytes of the MD5 of the lower-case ID, big-endian, mod count). A change
// would move runs between shards on upgrade, and a probe job's relabelling
// would send probes to the wrong shard. The deploy module compares with
// Prometheus' own model/relabel too.
func TestAssignmentIsStable(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want map[int]int // count -> shard
	}{
		{"3c90c3cc-0d44-4b50-8888-8dd25736052a", map[int]int{2: 1, 3: 0, 5: 0, 7: 6}},
		{"00000000-0000-0000-0000-000000000000", map[int]int{2: 1, 3: 2, 5: 2, 7: 6}},
		{"FFFFFFFF-ffff-ffff-ffff-ffffffffffff", map[int]int{2: 1, 3: 0, 5: 1, 7: 5}},
		{"0b7f6a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", map[int]int{2: 0, 3: 2, 5: 4, 7: 0}},
	} {
		for count, want := range tc.want {
			if got := Of(tc.id, count); got != want {
				t.Errorf("Of(%s, %d) = %d, want %d", tc.id, count, got, want)
			}
			for i := range count {
				a, _ := New(i, count)
				if a.Owns(tc.id) != (i == want) || a.Owns(strings.ToUpper(tc.id)) != (i == want) {
					t.Errorf("shard %d of %d: Owns(%s) = %v", i, count, tc.id, a.Owns(tc.id))
				}
			}
		}
	}
}

func TestBadValuesNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		index, count int
		fromHost     bool
		host, want   string
	}{
		{0, 0, false, "", "--shard.count: must be at least 1"},
		{3, 3, false, "", "--shard.index: must be from 0 to --shard.count-1 (2), not 3"},
		{-1, 3, false, "", "--shard.index"},
		{0, 3, true, "exporter", `--shard.from-hostname: host name "exporter" does not end in -<number>`},
		{0, 3, true, "exporter-", "--shard.from-hostname"},
		{0, 3, true, "exporter-x", "--shard.from-hostname"},
		{0, 3, true, "exporter-3", "gives index 3, but --shard.count is 3"},
		{0, 3, true, "", "--shard.from-hostname: the host name is empty"},
	} {
		_, err := FromFlags(tc.index, tc.count, tc.fromHost, tc.host)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc, err, tc.want)
		}
	}
	a, err := FromFlags(0, 4, true, "workflow-runs-exporter-2")
	if err != nil || a.Index != 2 || a.Count != 4 {
		t.Errorf("from host name workflow-runs-exporter-2: %+v %v, want index 2 of 4", a, err)
	}
}

func TestShardMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, _ := New(1, 3)
	if err := a.Register(reg); err != nil {
		t.Fatal(err)
	}
	want := `# HELP workflow_runs_exporter_shard The shard of the run IDs this instance owns; always 1.
# TYPE workflow_runs_exporter_shard gauge
workflow_runs_exporter_shard{count="3",index="1"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
