package collector

import (
	"hash/fnv"
	"slices"
	"strings"
	"sync/atomic"
)

// Runs are kept in chunks so that gzip output can be cached per chunk: a
// changed run costs the recompression of its chunk only, and a scrape
// writes the cached parts of every other chunk as they are.

// chunk is an immutable group of rendered runs. A change replaces the whole
// chunk (copy on write), so a scrape that took a chunk writes every run in
// it either before or after an update, never half of one.
type chunk struct {
	runs []*renderedRun
	// parts are the chunk's families compressed, made on first use.
	parts atomic.Pointer[[numRunFamilies]compressedPart]
}

// activeRunsPerChunk is the size active chunks grow towards. Unfinished
// runs change every poll cycle, so their chunks are small: a progress
// update recompresses about 16 runs, some 40 KiB.
const activeRunsPerChunk = 16

// activeChunks holds the runs that may still change, placed by a hash of
// their ID (the top bits), each chunk sorted by ID. When the chunks hold
// more than activeRunsPerChunk runs on average, each splits in two.
type activeChunks struct {
	bits   uint
	chunks []*chunk
	count  int
}

func newActiveChunks() activeChunks { return activeChunks{chunks: []*chunk{{}}} }

func (a *activeChunks) index(id string) int {
	if a.bits == 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(id))
	return int(h.Sum64() >> (64 - a.bits))
}

func compareID(r *renderedRun, id string) int { return strings.Compare(r.id, id) }

// put inserts rr, replacing a run with the same ID.
func (a *activeChunks) put(rr *renderedRun) {
	i := a.index(rr.id)
	c := a.chunks[i]
	pos, found := slices.BinarySearchFunc(c.runs, rr.id, compareID)
	next := slices.Clone(c.runs)
	if found {
		next[pos] = rr
	} else {
		next = slices.Insert(next, pos, rr)
		a.count++
	}
	a.chunks[i] = &chunk{runs: next}
	a.grow()
}

// remove takes out the run id and returns it, or nil.
func (a *activeChunks) remove(id string) *renderedRun {
	i := a.index(id)
	c := a.chunks[i]
	pos, found := slices.BinarySearchFunc(c.runs, id, compareID)
	if !found {
		return nil
	}
	old := c.runs[pos]
	a.chunks[i] = &chunk{runs: slices.Delete(slices.Clone(c.runs), pos, pos+1)}
	a.count--
	return old
}

// grow doubles the chunks: chunk i splits into 2i and 2i+1 (the next bit of
// the hash), each staying sorted.
func (a *activeChunks) grow() {
	if a.count <= activeRunsPerChunk<<a.bits || a.bits >= 24 {
		return
	}
	a.bits++
	next := make([]*chunk, 1<<a.bits)
	for i := range next {
		next[i] = &chunk{}
	}
	for _, c := range a.chunks {
		for _, rr := range c.runs {
			j := a.index(rr.id)
			next[j].runs = append(next[j].runs, rr)
		}
	}
	a.chunks = next
}

// settledRunsPerChunk is the size of settled chunks: finished runs never
// change, so their chunks are large, for better compression and fewer
// parts per scrape.
const settledRunsPerChunk = 128

// settledChunks holds finished runs in the order they finished. A newly
// finished run goes to the last chunk, so the many runs that finished
// before keep their compressed parts; only removals (retention, a run ID
// taken out of the configuration) touch older chunks.
type settledChunks struct {
	chunks []*chunk
	where  map[string]int // run ID -> index in chunks
	count  int
	empty  int // chunks emptied by removals, dropped when they pile up
}

func (s *settledChunks) add(rr *renderedRun) {
	last := len(s.chunks) - 1
	if last < 0 || len(s.chunks[last].runs) >= settledRunsPerChunk {
		s.chunks = append(s.chunks, &chunk{})
		last++
	}
	s.chunks[last] = &chunk{runs: append(slices.Clone(s.chunks[last].runs), rr)}
	s.where[rr.id] = last
	s.count++
}

func (s *settledChunks) remove(id string) *renderedRun {
	i, ok := s.where[id]
	if !ok {
		return nil
	}
	delete(s.where, id)
	s.count--
	c := s.chunks[i]
	pos := slices.IndexFunc(c.runs, func(r *renderedRun) bool { return r.id == id })
	old := c.runs[pos]
	s.chunks[i] = &chunk{runs: slices.Delete(slices.Clone(c.runs), pos, pos+1)}
	if len(s.chunks[i].runs) == 0 && i != len(s.chunks)-1 {
		s.empty++
		if s.empty > len(s.chunks)/2 {
			s.compact()
		}
	}
	return old
}

// compact drops empty chunks and renumbers the rest.
func (s *settledChunks) compact() {
	kept := s.chunks[:0]
	for _, c := range s.chunks {
		if len(c.runs) > 0 {
			kept = append(kept, c)
		}
	}
	clear(s.chunks[len(kept):])
	s.chunks = kept
	for i, c := range s.chunks {
		for _, rr := range c.runs {
			s.where[rr.id] = i
		}
	}
	s.empty = 0
}
