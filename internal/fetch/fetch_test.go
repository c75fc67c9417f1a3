package fetch

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nopFetcher struct{}

func (nopFetcher) GetRun(context.Context, string) (*runs.Run, []string, error) {
	return &runs.Run{}, nil, nil
}

func newGate(concurrency int, perSecond float64) *Gate {
	g := New(log.NewNopLogger(), prometheus.NewRegistry())
	g.Configure(nopFetcher{}, concurrency, perSecond)
	return g
}

// wait takes a turn in the background; the channel gets it once granted.
func wait(g *Gate, ctx context.Context, class Class) chan *Turn {
	c := make(chan *Turn, 1)
	go func() {
		t, err := g.Wait(ctx, class)
		if err != nil {
			close(c)
			return
		}
		c <- t
	}()
	return c
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// While poll requests wait, probes get every other free slot and never
// more than half of the slots; with none waiting, probes may take them all.
func TestProbesTakeAtMostHalfWhilePollsWait(t *testing.T) {
	g := newGate(4, 1e9)
	ctx := context.Background()
	// Probes alone take every slot.
	var probes []*Turn
	for range 4 {
		probes = append(probes, <-wait(g, ctx, Probe))
	}
	if g.InUse(Probe) != 4 {
		t.Fatalf("probes alone hold %d of 4 slots", g.InUse(Probe))
	}
	// Now polls and probes queue up for the slots as they free.
	var polls []chan *Turn
	for range 6 {
		polls = append(polls, wait(g, ctx, Poll))
	}
	var more []chan *Turn
	for range 6 {
		more = append(more, wait(g, ctx, Probe))
	}
	eventually(t, "12 waiting", func() bool { return g.Waiting(Poll) == 6 && g.Waiting(Probe) == 6 })
	for _, p := range probes {
		g.release(Probe)
		_ = p
	}
	eventually(t, "4 slots handed out", func() bool { return g.InUse(Poll)+g.InUse(Probe) == 4 })
	if g.InUse(Probe) > 2 {
		t.Errorf("probes hold %d of 4 slots while polls wait, want at most 2", g.InUse(Probe))
	}
	if g.InUse(Poll) < 2 {
		t.Errorf("polls hold %d of 4 slots", g.InUse(Poll))
	}
	// Drain everything.
	for g.InUse(Poll)+g.InUse(Probe)+g.Waiting(Poll)+g.Waiting(Probe) > 0 {
		for _, c := range append(polls, more...) {
			select {
			case t, ok := <-c:
				if ok {
					g.release(t.class)
				}
			default:
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// Probes beyond what the rate serves within a probe's deadline are refused
// at once, and a probe that gives up leaves the queue.
func TestProbeQueueIsBounded(t *testing.T) {
	g := newGate(1, 10) // at most max(2, 10*10/2) = 50 probes wait
	ctx, cancel := context.WithCancel(context.Background())
	held := <-wait(g, ctx, Poll)
	var waiting []chan *Turn
	for range 50 {
		waiting = append(waiting, wait(g, ctx, Probe))
	}
	eventually(t, "50 probes waiting", func() bool { return g.Waiting(Probe) == 50 })
	if _, err := g.Wait(ctx, Probe); !errors.Is(err, ErrBusy) {
		t.Errorf("the 51st probe: %v, want ErrBusy", err)
	}
	cancel()
	for _, c := range waiting {
		<-c
	}
	if g.Waiting(Probe) != 0 {
		t.Errorf("%d probes still queued after giving up", g.Waiting(Probe))
	}
	g.release(held.class)
	if g.InUse(Poll)+g.InUse(Probe) != 0 {
		t.Error("slots still in use")
	}
}
