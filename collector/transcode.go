package collector

import (
	"bytes"
	"encoding/binary"
	"math"
	"strconv"
)

// Protobuf field tags of io.prometheus.client messages (client_model's
// metrics.proto), each a field number and a wire type.
const (
	tagFamilyMetric = 4<<3 | 2 // MetricFamily.metric, a message
	tagMetricLabel  = 1<<3 | 2 // Metric.label, a message
	tagMetricGauge  = 2<<3 | 2 // Metric.gauge, a message
	tagLabelName    = 1<<3 | 2 // LabelPair.name, a string
	tagLabelValue   = 2<<3 | 2 // LabelPair.value, a string
	tagGaugeValue   = 1<<3 | 1 // Gauge.value, a double (fixed 64 bits)
)

// gaugeSize is an encoded Metric.gauge field: tag, length, and the Gauge
// message (tag and 8 bytes).
const gaugeSize = 1 + 1 + 1 + 8

// appendProtoMetrics appends, for each line of text, the MetricFamily.metric
// entry (tag, length and Metric message) of the same gauge series. text is
// one family's lines as renderRun writes them: name{label="value",...}
// value, labels sorted by name, values escaped as the text format does,
// which are the Metric fields in the order client_golang gives them. A
// line that does not read so, which renderRun does not write, is left out.
func appendProtoMetrics(dst, text []byte) []byte {
	var labels []textLabel
	var unescaped []byte
	for len(text) > 0 {
		line := text
		if nl := bytes.IndexByte(text, '\n'); nl >= 0 {
			line, text = text[:nl], text[nl+1:]
		} else {
			text = nil
		}
		var value float64
		var ok bool
		labels, unescaped, value, ok = parseLine(line, labels[:0], unescaped[:0])
		if !ok {
			continue
		}
		size := gaugeSize
		for _, l := range labels {
			size += 1 + uvarintLen(l.pairSize()) + l.pairSize()
		}
		dst = append(dst, tagFamilyMetric)
		dst = binary.AppendUvarint(dst, uint64(size))
		for _, l := range labels {
			dst = append(dst, tagMetricLabel)
			dst = binary.AppendUvarint(dst, uint64(l.pairSize()))
			dst = append(dst, tagLabelName)
			dst = binary.AppendUvarint(dst, uint64(len(l.name)))
			dst = append(dst, l.name...)
			dst = append(dst, tagLabelValue)
			dst = binary.AppendUvarint(dst, uint64(len(l.value)))
			dst = append(dst, l.value...)
		}
		dst = append(dst, tagMetricGauge, 1+8, tagGaugeValue)
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(value))
	}
	return dst
}

// textLabel is a label of a line being transcoded, its value unescaped.
// An escaped value is first kept as the offsets from and to in the scratch
// buffer it is unescaped into, which may move while the line is read.
type textLabel struct {
	name, value []byte
	from, to    int
	escaped     bool
}

func (l textLabel) pairSize() int {
	return 1 + uvarintLen(len(l.name)) + len(l.name) + 1 + uvarintLen(len(l.value)) + len(l.value)
}

// parseLine reads name{label="value",...} value. Escaped label values are
// unescaped into the scratch buffer unescaped, returned grown.
func parseLine(line []byte, labels []textLabel, unescaped []byte) (_ []textLabel, _ []byte, value float64, ok bool) {
	i := bytes.IndexByte(line, '{')
	if i < 0 {
		return labels, unescaped, 0, false
	}
	i++
	for i < len(line) && line[i] != '}' {
		eq := bytes.IndexByte(line[i:], '=')
		if eq < 0 || i+eq+1 >= len(line) || line[i+eq+1] != '"' {
			return labels, unescaped, 0, false
		}
		l := textLabel{name: line[i : i+eq]}
		i += eq + 2
		start := i
		for i < len(line) && line[i] != '"' {
			if line[i] == '\\' {
				l.escaped = true
				i++
			}
			i++
		}
		if i >= len(line) {
			return labels, unescaped, 0, false
		}
		if l.escaped {
			l.from = len(unescaped)
			unescaped = appendUnescaped(unescaped, line[start:i])
			l.to = len(unescaped)
		} else {
			l.value = line[start:i]
		}
		labels = append(labels, l)
		i++ // the closing quote
		if i < len(line) && line[i] == ',' {
			i++
		}
	}
	if i+2 > len(line) || line[i+1] != ' ' {
		return labels, unescaped, 0, false
	}
	for n := range labels {
		if labels[n].escaped {
			labels[n].value = unescaped[labels[n].from:labels[n].to]
		}
	}
	value, err := strconv.ParseFloat(string(line[i+2:]), 64)
	return labels, unescaped, value, err == nil
}

// appendUnescaped undoes the text format's escaping of a label value.
func appendUnescaped(dst, v []byte) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\\' && i+1 < len(v) {
			i++
			switch c = v[i]; c {
			case 'n':
				c = '\n'
			}
		}
		dst = append(dst, c)
	}
	return dst
}

func uvarintLen(n int) int {
	size := 1
	for ; n >= 0x80; n >>= 7 {
		size++
	}
	return size
}
