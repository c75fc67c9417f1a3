package collector

import (
	"bytes"
	"hash/fnv"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/s2"
)

// Runs are kept in chunks so that gzip output can be cached per chunk: a
// changed run costs the recompression of its chunk only, and a scrape
// writes the cached parts of every other chunk as they are.

// chunk is an immutable group of rendered runs. A change replaces the whole
// chunk (copy on write), so a scrape that took a chunk writes every run in
// it either before or after an update, never half of one.
type chunk struct {
	runs []*renderedRun
	// sealed chunks hold the lines of their runs family by family,
	// compressed, and their runs keep only their offsets and aggregate
	// keys, not their lines (buf is nil). The lines are in blocks,
	// compressed with S2, until a gzip scrape has made the chunk's gzip
	// parts (cache[textGzip]); blocks then go, and the lines are read from
	// those parts: a finished run's lines are kept once, not twice.
	sealed bool
	blocks atomic.Pointer[[numRunFamilies][]byte]
	// cache holds the chunk's families in each encoding a scrape asked
	// for, made on first use (Exposition).
	cache [numEncodings]atomic.Pointer[[numRunFamilies]part]
}

// Finished runs never change, and are most of the runs of an exporter that
// has run for a while. Their lines compress about five times with S2,
// which decodes at gigabytes a second: a full chunk of them is sealed,
// so that what every plain scrape writes costs a fifth of the memory, and
// decoding it a few milliseconds per ten thousand runs.

// seal compresses runs into a sealed chunk.
func seal(runs []*renderedRun) *chunk {
	var blocks [numRunFamilies][]byte
	var plain []byte
	for f := range numRunFamilies {
		plain = plain[:0]
		for _, rr := range runs {
			plain = append(plain, rr.family(f)...)
		}
		if len(plain) > 0 {
			blocks[f] = bytes.Clone(s2.Encode(nil, plain)) // Encode leaves room for the worst case
		}
	}
	sealed := make([]*renderedRun, len(runs))
	for i, rr := range runs {
		light := *rr
		light.buf = nil
		sealed[i] = &light
	}
	c := &chunk{runs: sealed, sealed: true}
	c.blocks.Store(&blocks)
	return c
}

// unseal returns the runs of a sealed chunk with their lines.
func (c *chunk) unseal() []*renderedRun {
	var families [numRunFamilies][]byte
	for f := range numRunFamilies {
		families[f] = c.decode(f, nil)
	}
	out := make([]*renderedRun, len(c.runs))
	for i, light := range c.runs {
		rr := *light
		rr.buf = make([]byte, 0, light.off[numRunFamilies])
		for f := range numRunFamilies {
			n := int(light.off[f+1] - light.off[f])
			rr.buf = append(rr.buf, families[f][:n]...)
			families[f] = families[f][n:]
		}
		out[i] = &rr
	}
	return out
}

// decode returns the lines of family f of a sealed chunk, decoded into
// scratch when it is large enough.
func (c *chunk) decode(f int, scratch []byte) []byte {
	blocks := c.blocks.Load()
	if blocks == nil {
		return c.inflate(f, scratch)
	}
	block := blocks[f]
	if len(block) == 0 {
		return nil
	}
	n, err := s2.DecodedLen(block)
	if err != nil {
		panic("collector: a sealed chunk does not decode: " + err.Error()) // made by seal, in memory
	}
	if cap(scratch) < n {
		scratch = make([]byte, n)
	}
	plain, err := s2.Decode(scratch[:cap(scratch)], block)
	if err != nil {
		panic("collector: a sealed chunk does not decode: " + err.Error())
	}
	return plain
}

// inflate returns the lines of family f of a sealed chunk from its gzip
// part, decoded into scratch when it is large enough. Deflate decodes a
// few times slower than S2: plain scrapes of finished runs pay that, so
// that the gzip scrapes Prometheus makes keep the lines once.
func (c *chunk) inflate(f int, scratch []byte) []byte {
	p := c.cache[textGzip].Load()[f]
	if p.size == 0 {
		return nil
	}
	if uint64(cap(scratch)) < p.size {
		scratch = make([]byte, p.size)
	}
	src := bytes.NewReader(p.data)
	r := inflaters.Get().(io.ReadCloser)
	defer inflaters.Put(r)
	if err := r.(flate.Resetter).Reset(src, nil); err != nil {
		panic("collector: resetting an inflater: " + err.Error())
	}
	// The part ends with a sync flush, not a final block: read exactly its
	// size, which is known.
	if _, err := io.ReadFull(r, scratch[:p.size]); err != nil {
		panic("collector: a sealed chunk does not inflate: " + err.Error()) // made by deflate, in memory
	}
	return scratch[:p.size]
}

// inflaters are reused: a new one allocates tens of kilobytes, and a plain
// scrape reads a part of every family of every sealed chunk.
var inflaters = sync.Pool{New: func() any { return flate.NewReader(bytes.NewReader(nil)) }}

// appendFamily appends the lines of family f of every run in the chunk.
func (c *chunk) appendFamily(dst []byte, f int) []byte {
	if c.sealed {
		return append(dst, c.decode(f, nil)...)
	}
	for _, rr := range c.runs {
		dst = append(dst, rr.family(f)...)
	}
	return dst
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

// put inserts rr, replacing a run with the same ID, and returns the run it
// replaced, or nil.
func (a *activeChunks) put(rr *renderedRun) (old *renderedRun) {
	i := a.index(rr.id)
	c := a.chunks[i]
	pos, found := slices.BinarySearchFunc(c.runs, rr.id, compareID)
	next := slices.Clone(c.runs)
	if found {
		old, next[pos] = next[pos], rr
	} else {
		next = slices.Insert(next, pos, rr)
		a.count++
	}
	a.chunks[i] = &chunk{runs: next}
	a.grow()
	return old
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
	empty  int            // chunks emptied by removals, dropped when they pile up
}

func (s *settledChunks) add(rr *renderedRun) {
	last := len(s.chunks) - 1
	if last < 0 || s.chunks[last].sealed {
		s.chunks = append(s.chunks, &chunk{})
		last++
	}
	next := append(slices.Clone(s.chunks[last].runs), rr)
	if len(next) >= settledRunsPerChunk {
		s.chunks[last] = seal(next)
	} else {
		s.chunks[last] = &chunk{runs: next}
	}
	s.where[rr.id] = last
}

func (s *settledChunks) remove(id string) *renderedRun {
	if old := s.removeMany([]string{id}); len(old) == 1 {
		return old[0]
	}
	return nil
}

// removeMany takes out the runs of ids it holds and returns them; each
// chunk concerned is rebuilt once.
func (s *settledChunks) removeMany(ids []string) []*renderedRun {
	byChunk := map[int]map[string]bool{}
	for _, id := range ids {
		i, ok := s.where[id]
		if !ok {
			continue
		}
		delete(s.where, id)
		if byChunk[i] == nil {
			byChunk[i] = map[string]bool{}
		}
		byChunk[i][id] = true
	}
	var removed []*renderedRun
	for i, gone := range byChunk {
		c := s.chunks[i]
		var kept []*renderedRun
		for _, rr := range c.runs {
			if gone[rr.id] {
				removed = append(removed, rr)
			}
		}
		switch {
		case len(gone) == len(c.runs):
			s.chunks[i] = &chunk{}
		case !c.sealed:
			kept = slices.DeleteFunc(slices.Clone(c.runs), func(r *renderedRun) bool { return gone[r.id] })
			s.chunks[i] = &chunk{runs: kept}
		default:
			kept = slices.DeleteFunc(c.unseal(), func(r *renderedRun) bool { return gone[r.id] })
			s.chunks[i] = seal(kept)
		}
		if len(s.chunks[i].runs) == 0 && i != len(s.chunks)-1 {
			s.empty++
		}
	}
	if s.empty > len(s.chunks)/2 {
		s.compact()
	}
	return removed
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
