// Package logging builds the exporter's logger from --log.level and
// --log.format. The exporter logs with go-kit; the exporter-toolkit takes a
// *slog.Logger, which is bridged into the same go-kit logger, so there is
// one logging setup and every line, whoever writes it, has the same keys:
// time, level, caller and msg, in that order in logfmt.
package logging

import (
	"io"
	"log/slog"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/common/promslog"
	sloggokit "github.com/tjhop/slog-gokit"
)

// New returns the go-kit logger the exporter logs with and the slog logger
// for the exporter-toolkit, both writing to w.
func New(w io.Writer, c *promslog.Config) (log.Logger, *slog.Logger) {
	sync := log.NewSyncWriter(w)
	var out log.Logger
	if c.Format != nil && c.Format.String() == "json" {
		out = log.NewJSONLogger(sync)
	} else {
		out = log.NewLogfmtLogger(sync)
	}
	lvl := "info"
	if c.Level != nil {
		lvl = c.Level.String()
	}
	base := level.NewFilter(uniform(out), level.Allow(level.ParseDefault(lvl, level.InfoValue())))
	var slogLevel slog.Leveler
	if c.Level != nil {
		slogLevel = c.Level.Level()
	}
	slogger := slog.New(sloggokit.NewGoKitHandler(base, slogLevel))
	return log.With(base, "time", log.DefaultTimestampUTC, "caller", log.DefaultCaller), slogger
}

// leading are the keys every line starts with, in this order.
var leading = []string{"time", "level", "caller", "msg"}

// uniform puts the leading keys first and writes times as go-kit's
// DefaultTimestampUTC does (RFC 3339, UTC), so that the bridged slog lines,
// which carry a time.Time in local time, read like the others.
func uniform(next log.Logger) log.Logger {
	return log.LoggerFunc(func(keyvals ...any) error {
		out := make([]any, 0, len(keyvals)+1)
		used := make([]bool, len(keyvals))
		for _, key := range leading {
			for i := 0; i+1 < len(keyvals); i += 2 {
				if k, ok := keyvals[i].(string); ok && k == key && !used[i] {
					v := keyvals[i+1]
					if t, ok := v.(time.Time); ok {
						v = t.UTC().Format(time.RFC3339Nano)
					}
					out = append(out, k, v)
					used[i] = true
					break
				}
			}
		}
		for i := 0; i < len(keyvals); i += 2 {
			if used[i] {
				continue
			}
			out = append(out, keyvals[i])
			if i+1 < len(keyvals) {
				out = append(out, keyvals[i+1])
			}
		}
		return next.Log(out...)
	})
}
