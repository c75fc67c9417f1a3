// Package scrapetest is for the tests of the packages that write and serve
// expositions (collector, endpoints, the binary's end-to-end tests): the
// metric families of a body in any format the exporter writes, the lines
// two expositions do not share, and a scrape whose client stops reading.
package scrapetest

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Families decodes every metric family of r with expfmt's own decoder for
// format: the text parser (which gives them in no particular order), the
// OpenMetrics 1.0 parser (which checks the grammar, exemplars included) or
// the delimited protobuf decoder.
func Families(r io.Reader, format expfmt.Format) ([]*dto.MetricFamily, error) {
	dec := expfmt.NewDecoder(r, format)
	var out []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		err := dec.Decode(mf)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, mf)
	}
}

// DiffLines lists the lines only in want (-) or only in got (+), each in
// its order; "" when both hold the same lines, in any order.
func DiffLines(want, got []string) string {
	count := map[string]int{}
	for _, l := range want {
		count[l]++
	}
	for _, l := range got {
		count[l]--
	}
	var b strings.Builder
	for _, l := range want {
		if count[l] > 0 {
			b.WriteString("- " + l + "\n")
			count[l]--
		}
	}
	for _, l := range got {
		if count[l] < 0 {
			b.WriteString("+ " + l + "\n")
			count[l]++
		}
	}
	return b.String()
}

// StallScrape starts a scrape of /metrics at addr, with extra header lines
// ("Name: value\r\n"), from a client that reads the first bytes of the
// answer and no more: its small receive buffer fills, and the server's
// writes block. The connection is closed when the test ends.
func StallScrape(tb testing.TB, addr, header string) {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	conn.(*net.TCPConn).SetReadBuffer(4096)
	conn.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n" + header + "\r\n"))
	if _, err := conn.Read(make([]byte, 512)); err != nil {
		tb.Fatal(err)
	}
}
