package collector

import (
	"bufio"
	"bytes"
	"encoding/binary"
	flate "github.com/klauspost/compress/flate"
	"hash/crc32"
	"io"
	"sync"
)

// Gzip without recompressing on every scrape: a deflate stream may be
// assembled from independently compressed parts, each ended with a sync
// flush (byte-aligned, not final) and none referring to data before its own
// start. The store compresses each chunk's lines of each family once, when a
// scrape first needs them after a change, and every scrape concatenates the
// cached parts. The gzip trailer's CRC-32 is combined from the parts' CRCs,
// so unchanged data is not read either. The result is one ordinary gzip
// member any client decodes.
//
// Parts are compressed at flate.BestSpeed: its Reset is nearly free, while
// every other level clears about half a megabyte of tables per part, and a
// cached part is compressed once anyway.
const compressionLevel = flate.BestSpeed

var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, compressionLevel)
	return w
}}

// piece is a part of the exposition kept both plain and compressed.
type piece struct {
	plain    []byte
	deflated []byte
	crc      uint32
}

func newPiece(plain []byte) *piece {
	p := &piece{plain: plain}
	if len(plain) == 0 {
		return p
	}
	var buf bytes.Buffer
	fw := flateWriters.Get().(*flate.Writer)
	fw.Reset(&buf)
	fw.Write(plain)
	fw.Flush()
	flateWriters.Put(fw)
	p.deflated = buf.Bytes()
	p.crc = crc32.ChecksumIEEE(plain)
	return p
}

// compressedPart is one chunk's lines of one family, compressed.
type compressedPart struct {
	deflated []byte
	crc      uint32
	size     uint64
}

// compressed returns the chunk's compressed families, compressing them on
// first use. Two scrapes may race to do it; both results are equal.
func (c *chunk) compressed() *[numRunFamilies]compressedPart {
	if p := c.parts.Load(); p != nil {
		return p
	}
	var parts [numRunFamilies]compressedPart
	fw := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(fw)
	var plain []byte
	for f := range numRunFamilies {
		plain = c.appendFamily(plain[:0], f)
		if len(plain) == 0 {
			continue
		}
		var buf bytes.Buffer
		fw.Reset(&buf)
		fw.Write(plain)
		fw.Flush()
		parts[f] = compressedPart{deflated: bytes.Clone(buf.Bytes()), crc: crc32.ChecksumIEEE(plain), size: uint64(len(plain))}
	}
	c.parts.CompareAndSwap(nil, &parts)
	return c.parts.Load()
}

// gzipHeader is a gzip member header: deflate, no name, no time, unknown OS.
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

// WriteError is an error writing a body to its client: the client went
// away, or did not take the body within its deadline. Nothing is wrong
// with the exposition itself.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "writing the response: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// sink records the first error of the writer under a body, so that a
// scrape whose client is gone stops at once instead of compressing the
// rest of the store for nobody.
type sink struct {
	w   io.Writer
	err error
}

func (s *sink) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	if err != nil {
		s.err = &WriteError{Err: err}
	}
	return n, s.err
}

// Exposition is the body of one scrape being written, plain or gzip.
type Exposition struct {
	w    *bufio.Writer
	out  *sink
	gzip bool
	crc  uint32 // of the plain bytes written so far, for the gzip trailer
	size uint64
	live *flate.Writer // compresses Write's bytes in gzip mode
	// scratch holds a sealed chunk's family decoded for a plain scrape.
	scratch []byte
}

// NewExposition starts a response body on w, gzip-compressed if gz.
func NewExposition(w io.Writer, gz bool) *Exposition {
	out := &sink{w: w}
	e := &Exposition{w: bufio.NewWriterSize(out, 64<<10), out: out, gzip: gz}
	if gz {
		e.w.Write(gzipHeader)
	}
	return e
}

// WriteRuns writes every family the store holds: each family's header, then
// the lines of every run in it, then the aggregates. Nothing is rendered
// here; compressed parts are made only for chunks changed since the last
// gzip scrape.
func (e *Exposition) WriteRuns(s *MetricsStore) {
	v := s.view()
	for f := range numRunFamilies {
		if v.series[f] == 0 {
			continue
		}
		e.writePiece(runHeaders[f])
		for _, c := range v.chunks {
			if e.out.err != nil {
				return
			}
			if len(c.runs) == 0 {
				continue
			}
			if !e.gzip {
				if c.blocks != nil {
					e.scratch = c.decode(f, e.scratch)
					e.w.Write(e.scratch)
					continue
				}
				for _, rr := range c.runs {
					e.w.Write(rr.family(f))
				}
				continue
			}
			if part := c.compressed()[f]; part.size > 0 {
				e.w.Write(part.deflated)
				e.crc = crc32Combine(e.crc, part.crc, part.size)
				e.size += part.size
			}
		}
	}
	for _, p := range v.aggregates {
		e.writePiece(p)
	}
}

func (e *Exposition) writePiece(p *piece) {
	if len(p.plain) == 0 {
		return
	}
	if !e.gzip {
		e.w.Write(p.plain)
		return
	}
	e.w.Write(p.deflated)
	e.crc = crc32Combine(e.crc, p.crc, uint64(len(p.plain)))
	e.size += uint64(len(p.plain))
}

// Write appends plain exposition text, such as the self-metrics encoded by
// client_golang, after what WriteRuns wrote.
func (e *Exposition) Write(p []byte) (int, error) {
	if !e.gzip {
		return e.w.Write(p)
	}
	if e.live == nil {
		e.live = flateWriters.Get().(*flate.Writer)
		e.live.Reset(e.w)
	}
	e.crc = crc32.Update(e.crc, crc32.IEEETable, p)
	e.size += uint64(len(p))
	return e.live.Write(p)
}

// Err returns the first error met writing to the underlying writer, a
// *WriteError, or nil.
func (e *Exposition) Err() error { return e.out.err }

// Close ends the body: in gzip mode the final deflate block and the
// trailer. It returns the first error met writing to the underlying writer.
func (e *Exposition) Close() error {
	if e.gzip {
		if e.live == nil {
			e.live = flateWriters.Get().(*flate.Writer)
			e.live.Reset(e.w)
		}
		e.live.Close() // the final block
		flateWriters.Put(e.live)
		e.live = nil
		var trailer [8]byte
		binary.LittleEndian.PutUint32(trailer[:4], e.crc)
		binary.LittleEndian.PutUint32(trailer[4:], uint32(e.size))
		e.w.Write(trailer[:])
	}
	return e.w.Flush()
}

// runHeaders are the per-run families' headers, compressed once.
var runHeaders = func() (out [numRunFamilies]*piece) {
	for f := range numRunFamilies {
		out[f] = newPiece(runFamilies[f].header)
	}
	return out
}()

// crc32Combine returns the CRC-32 (IEEE) of A followed by B from crcA, crcB
// and the length of B, as zlib's crc32_combine does: crcA is multiplied by
// x^(8·lenB) modulo the CRC polynomial, in O(log lenB) steps.
func crc32Combine(crcA, crcB uint32, lenB uint64) uint32 {
	return multModP(xPow8n(lenB), crcA) ^ crcB
}

// multModP multiplies a and b modulo the reflected IEEE polynomial.
func multModP(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				break
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ crc32.IEEE
		} else {
			b >>= 1
		}
	}
	return p
}

// x2n[k] is x^(2^k) modulo the polynomial.
var x2n = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	t[0] = p
	for k := 1; k < len(t); k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()

// xPow8n returns x^(8n) modulo the polynomial.
func xPow8n(n uint64) uint32 {
	p := uint32(1) << 31 // x^0
	k := 3               // 8n = n·2^3
	for n != 0 {
		if n&1 != 0 {
			p = multModP(x2n[k&31], p)
		}
		n >>= 1
		k++
	}
	return p
}
