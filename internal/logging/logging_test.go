package logging

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/go-kit/log/level"
	"github.com/go-logfmt/logfmt"
	"github.com/prometheus/common/promslog"
)

func config(t *testing.T, lvl, format string) *promslog.Config {
	t.Helper()
	c := &promslog.Config{Level: promslog.NewLevel(), Format: promslog.NewFormat()}
	if err := c.Level.Set(lvl); err != nil {
		t.Fatal(err)
	}
	if err := c.Format.Set(format); err != nil {
		t.Fatal(err)
	}
	return c
}

var rfc3339UTC = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`)

// TestEveryLineHasTheSameKeys: a line of the exporter's own and a line the
// exporter-toolkit writes through slog carry the same keys and time format,
// in logfmt and in JSON, so a log pipeline keyed on them sees every line.
func TestEveryLineHasTheSameKeys(t *testing.T) {
	for _, format := range []string{"logfmt", "json"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			logger, slogger := New(&buf, config(t, "info", format))
			level.Info(logger).Log("msg", "starting", "version", "1.0")
			slogger.Info("Listening on", "address", "[::]:10025")
			level.Debug(logger).Log("msg", "hidden at info")
			slogger.Debug("hidden too")

			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) != 2 {
				t.Fatalf("%d lines, want 2 (debug filtered out):\n%s", len(lines), buf.String())
			}
			var keyOrders [][]string
			for _, line := range lines {
				fields := map[string]string{}
				var order []string
				if format == "json" {
					var m map[string]any
					if err := json.Unmarshal([]byte(line), &m); err != nil {
						t.Fatalf("not JSON: %q: %v", line, err)
					}
					for k, v := range m {
						fields[k], _ = v.(string)
					}
				} else {
					d := logfmt.NewDecoder(strings.NewReader(line))
					for d.ScanRecord() {
						for d.ScanKeyval() {
							fields[string(d.Key())] = string(d.Value())
							order = append(order, string(d.Key()))
						}
					}
				}
				for _, k := range leading {
					if fields[k] == "" {
						t.Errorf("line %q has no %s", line, k)
					}
				}
				if !rfc3339UTC.MatchString(fields["time"]) {
					t.Errorf("line %q: time %q is not RFC 3339 in UTC", line, fields["time"])
				}
				if fields["level"] != "info" {
					t.Errorf("line %q: level %q, want info", line, fields["level"])
				}
				if _, bad := fields["ts"]; bad {
					t.Errorf("line %q has ts as well as time", line)
				}
				if order != nil {
					keyOrders = append(keyOrders, order[:4])
				}
			}
			for _, o := range keyOrders {
				if strings.Join(o, ",") != strings.Join(leading, ",") {
					t.Errorf("logfmt keys start %v, want %v", o, leading)
				}
			}
		})
	}
}
