package endpoints

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// stallGrace is how long a scrape's write to its client must have been
// blocked before a new scrape may take its slot. A client that reads gets
// 64 KiB through in far less; one that stopped reading never does.
const stallGrace = time.Second

// scrapeSlots limits the /metrics requests served at once
// (--web.max-requests). A scrape whose client stopped reading keeps its
// slot only while no other scrape needs it: a scrape that finds every
// slot taken waits for one, and takes over that of the scrape whose write
// has been blocked longest, once it has been blocked for stallGrace. So
// clients that send a request and never read cannot keep Prometheus out,
// however many they are. A scrape that gets no slot within its wait is
// answered 503.
type scrapeSlots struct {
	limit int

	mu   sync.Mutex
	held map[*scrapeSlot]struct{}
	// released is closed, and replaced, each time a slot is given back.
	released chan struct{}
}

// recheck is how often a waiting scrape looks again for a stalled one
// when none is blocked yet: a scrape between two writes is not blocked.
const recheck = 100 * time.Millisecond

func newScrapeSlots(limit int) *scrapeSlots {
	return &scrapeSlots{limit: limit, held: map[*scrapeSlot]struct{}{}, released: make(chan struct{})}
}

// scrapeSlot is one scrape's hold on a slot.
type scrapeSlot struct {
	owner *scrapeSlots
	// blockedSince is when the write to the client in progress began, in
	// Unix nanoseconds; 0 while none is.
	blockedSince atomic.Int64
	// cutOff makes the scrape's writes fail at once; nil when the
	// response cannot be cut off (then it is never taken over).
	cutOff func()
}

// acquire returns a slot for a scrape that cutOff can end, waiting at most
// wait for one; ok is false when none came.
func (s *scrapeSlots) acquire(ctx context.Context, wait time.Duration, cutOff func()) (slot *scrapeSlot, ok bool) {
	deadline := time.Now().Add(wait)
	for {
		s.mu.Lock()
		now := time.Now()
		if len(s.held) >= s.limit {
			victim, eligibleIn := s.stalledLocked(now)
			if victim == nil {
				released := s.released
				s.mu.Unlock()
				if eligibleIn < 0 {
					eligibleIn = recheck
				}
				pause := min(eligibleIn, deadline.Sub(now))
				if pause <= 0 {
					return nil, false
				}
				t := time.NewTimer(pause)
				select {
				case <-released:
				case <-t.C:
				case <-ctx.Done():
				}
				t.Stop()
				if ctx.Err() != nil {
					return nil, false
				}
				continue
			}
			// The victim's slot is handed over here and now: it is still
			// inside its handler (it leaves held only there), so cutting
			// off its response is safe, and no other scrape can take the
			// slot in between.
			delete(s.held, victim)
			victim.cutOff()
		}
		slot = &scrapeSlot{owner: s, cutOff: cutOff}
		s.held[slot] = struct{}{}
		s.mu.Unlock()
		return slot, true
	}
}

// stalledLocked returns the held scrape blocked longest on its client, if
// that is stallGrace or more; else how long until the one blocked longest
// reaches it, or -1 if no held scrape is blocked at all.
func (s *scrapeSlots) stalledLocked(now time.Time) (victim *scrapeSlot, eligibleIn time.Duration) {
	var oldest int64
	for slot := range s.held {
		since := slot.blockedSince.Load()
		if since == 0 || slot.cutOff == nil {
			continue
		}
		if victim == nil || since < oldest {
			victim, oldest = slot, since
		}
	}
	if victim == nil {
		return nil, -1
	}
	if blocked := now.Sub(time.Unix(0, oldest)); blocked < stallGrace {
		return nil, stallGrace - blocked
	}
	return victim, 0
}

// release gives the slot back, unless it was taken over.
func (slot *scrapeSlot) release() {
	s := slot.owner
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.held[slot]; !ok {
		return
	}
	delete(s.held, slot)
	close(s.released)
	s.released = make(chan struct{})
}

// writer returns w, noting in the slot how long each write blocks.
func (slot *scrapeSlot) writer(w io.Writer) io.Writer { return trackedWriter{w: w, slot: slot} }

type trackedWriter struct {
	w    io.Writer
	slot *scrapeSlot
}

func (t trackedWriter) Write(p []byte) (int, error) {
	t.slot.blockedSince.Store(time.Now().UnixNano())
	defer t.slot.blockedSince.Store(0)
	return t.w.Write(p)
}
