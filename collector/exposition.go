package collector

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"sync"

	flate "github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/s2"
	"github.com/prometheus/common/expfmt"
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
	fw := flateWriters.Get().(*flate.Writer)
	p.deflated = deflate(fw, plain)
	flateWriters.Put(fw)
	p.crc = crc32.ChecksumIEEE(plain)
	return p
}

// deflate compresses plain as one independent part of a deflate stream.
func deflate(fw *flate.Writer, plain []byte) []byte {
	var buf bytes.Buffer
	fw.Reset(&buf)
	fw.Write(plain)
	fw.Flush()
	return buf.Bytes()
}

// Format is the exposition format of a scrape.
type Format uint8

const (
	// FormatText is the Prometheus text format 0.0.4.
	FormatText Format = iota
	// FormatOpenMetrics is OpenMetrics 1.0 text, with exemplars.
	FormatOpenMetrics
	// FormatProtobuf is delimited io.prometheus.client.MetricFamily
	// messages, the histograms also in native form.
	FormatProtobuf
	numFormats
)

func (f Format) formatType() expfmt.FormatType {
	switch f {
	case FormatOpenMetrics:
		return expfmt.TypeOpenMetrics
	case FormatProtobuf:
		return expfmt.TypeProtoDelim
	}
	return expfmt.TypeTextPlain
}

// WriteOptions say how a scrape's body is written.
type WriteOptions struct {
	Format Format
	Gzip   bool
	// CreatedLines adds OpenMetrics' _created lines to the counter and
	// histograms (--web.openmetrics-created-lines).
	CreatedLines bool
}

// encoding is a form in which a chunk's families are kept for scrapes
// that ask for it, made on first use after a change. The text format's
// plain form is the runs' own lines; OpenMetrics shares both text forms,
// since the per-run families are gauges, whose text lines are valid
// OpenMetrics lines.
type encoding uint8

const (
	textGzip   encoding = iota // the text lines, compressed for gzip
	protoPlain                 // protobuf Metric entries, compressed with S2
	protoGzip                  // protobuf Metric entries, compressed for gzip
	numEncodings
)

// part is one chunk's lines of one family in one encoding.
type part struct {
	data []byte
	crc  uint32 // of the plain form, for gzip
	size uint64 // of the plain form
}

// encoded returns the chunk's families in encoding enc, making them on
// first use. Two scrapes may race to do it; both results are equal.
//
// Protobuf is made from the text lines, not rendered from the runs: the
// store keeps one rendering per run, and only a scrape that asks for
// protobuf pays for it. Once made it is kept, like the gzip parts, so a
// protobuf scrape of unchanged chunks costs what a text scrape does
// (README, Performance).
func (c *chunk) encoded(enc encoding) *[numRunFamilies]part {
	if p := c.cache[enc].Load(); p != nil {
		return p
	}
	var parts [numRunFamilies]part
	fw := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(fw)
	var text, pb []byte
	for f := range numRunFamilies {
		text = c.appendFamily(text[:0], f)
		if len(text) == 0 {
			continue
		}
		plain := text
		if enc != textGzip {
			pb = appendProtoMetrics(pb[:0], text)
			plain = pb
		}
		p := part{size: uint64(len(plain))}
		if enc == protoPlain {
			p.data = bytes.Clone(s2.Encode(nil, plain)) // Encode leaves room for the worst case
		} else {
			p.data, p.crc = bytes.Clone(deflate(fw, plain)), crc32.ChecksumIEEE(plain)
		}
		parts[f] = p
	}
	c.cache[enc].CompareAndSwap(nil, &parts)
	if enc == textGzip && c.sealed {
		c.blocks.Store(nil) // the gzip parts hold the lines now (see chunk)
	}
	return c.cache[enc].Load()
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

// Exposition is the body of one scrape being written.
type Exposition struct {
	w    *bufio.Writer
	out  *sink
	opts WriteOptions
	crc  uint32 // of the plain bytes written so far, for the gzip trailer
	size uint64
	live *flate.Writer // compresses Write's bytes in gzip mode
	// scratch holds a chunk's family decoded for a plain scrape.
	scratch []byte
}

// NewExposition starts a response body on w.
func NewExposition(w io.Writer, o WriteOptions) *Exposition {
	out := &sink{w: w}
	e := &Exposition{w: bufio.NewWriterSize(out, 64<<10), out: out, opts: o}
	if o.Gzip {
		e.w.Write(gzipHeader)
	}
	return e
}

// WriteRuns writes every family the store holds: each per-run family's
// header, then the lines of every run in it, then the aggregates. Nothing
// is rendered here; encoded parts are made only for chunks changed since
// the last scrape that asked for them.
func (e *Exposition) WriteRuns(s *MetricsStore) {
	v := s.view()
	for f := range numRunFamilies {
		if v.series[f] == 0 {
			continue
		}
		if e.opts.Format == FormatProtobuf {
			e.writeProtoFamily(v.chunks, f)
		} else {
			e.writeTextFamily(v.chunks, f)
		}
		if e.out.err != nil {
			return
		}
	}
	e.writePiece(s.aggregates(e.opts))
}

// writeTextFamily writes a per-run family in the text format or in
// OpenMetrics: the same lines under the format's header.
func (e *Exposition) writeTextFamily(chunks []*chunk, f int) {
	e.writePiece(runHeaders[e.opts.Format][f])
	for _, c := range chunks {
		if e.out.err != nil {
			return
		}
		switch {
		case len(c.runs) == 0:
		case e.opts.Gzip:
			e.writePart(c.encoded(textGzip)[f])
		case c.sealed:
			e.scratch = c.decode(f, e.scratch)
			e.w.Write(e.scratch)
		default:
			for _, rr := range c.runs {
				e.w.Write(rr.family(f))
			}
		}
	}
}

// writeProtoFamily writes a per-run family as one length-delimited
// MetricFamily message: its length, its name, help and type, then the
// Metric entries of every chunk, whose sizes are known before they are
// written.
func (e *Exposition) writeProtoFamily(chunks []*chunk, f int) {
	enc := protoPlain
	if e.opts.Gzip {
		enc = protoGzip
	}
	header := runFamilies[f].pbHeader
	size := uint64(len(header))
	for _, c := range chunks {
		if len(c.runs) > 0 {
			size += c.encoded(enc)[f].size
		}
	}
	e.writeBytes(append(binary.AppendUvarint(make([]byte, 0, len(header)+binary.MaxVarintLen64), size), header...))
	for _, c := range chunks {
		if e.out.err != nil {
			return
		}
		if len(c.runs) == 0 {
			continue
		}
		p := c.encoded(enc)[f]
		switch {
		case p.size == 0:
		case e.opts.Gzip:
			e.writePart(p)
		default:
			n, err := s2.DecodedLen(p.data)
			if err != nil {
				panic("collector: an encoded chunk does not decode: " + err.Error()) // made by encoded, in memory
			}
			if cap(e.scratch) < n {
				e.scratch = make([]byte, n)
			}
			if e.scratch, err = s2.Decode(e.scratch[:cap(e.scratch)], p.data); err != nil {
				panic("collector: an encoded chunk does not decode: " + err.Error())
			}
			e.w.Write(e.scratch)
		}
	}
}

// writePart writes a compressed part in gzip mode.
func (e *Exposition) writePart(p part) {
	if p.size == 0 {
		return
	}
	e.w.Write(p.data)
	e.crc = crc32Combine(e.crc, p.crc, p.size)
	e.size += p.size
}

func (e *Exposition) writePiece(p *piece) {
	if len(p.plain) == 0 {
		return
	}
	if !e.opts.Gzip {
		e.w.Write(p.plain)
		return
	}
	e.writePart(part{data: p.deflated, crc: p.crc, size: uint64(len(p.plain))})
}

// writeBytes writes plain bytes made for this scrape; in gzip mode they
// are compressed as a part of their own.
func (e *Exposition) writeBytes(plain []byte) {
	if !e.opts.Gzip {
		e.w.Write(plain)
		return
	}
	e.writePiece(newPiece(plain))
}

// Write appends bytes encoded by expfmt in the same format, such as the
// self-metrics, after what WriteRuns wrote.
func (e *Exposition) Write(p []byte) (int, error) {
	if !e.opts.Gzip {
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
	if e.opts.Gzip {
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

// runHeaders are the per-run families' headers in the text formats,
// compressed once.
var runHeaders = func() (out [numFormats][numRunFamilies]*piece) {
	for f := range numRunFamilies {
		out[FormatText][f] = newPiece(runFamilies[f].header)
		out[FormatOpenMetrics][f] = newPiece(runFamilies[f].omHeader)
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
