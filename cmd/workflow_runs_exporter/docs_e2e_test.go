package main

// The documentation test, as kube-state-metrics has one: the README and the
// real binary must describe the same exporter, both ways. Every metric
// family and label on a real scrape (every feature on) has its row in the
// README's metric tables, and every row is on that scrape; every flag of
// --help has its row in the Flags table, and every row is a flag; every
// key of the configuration file is in the Configuration table and YAML,
// and every key there exists.

import (
	"bytes"
	"fmt"
	"iter"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/expfmt"
	"go.yaml.in/yaml/v2"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/scrapetest"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/shard"
)

func TestDocumentation(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	t.Run("metrics", func(t *testing.T) { checkMetricsDocumented(t, readme) })
	t.Run("flags", func(t *testing.T) { checkFlagsDocumented(t, readme) })
	t.Run("config keys", func(t *testing.T) { checkConfigDocumented(t, readme) })
}

// --- The README, read as tables ---

// readmeSection returns the "## title" section of the README, up to the
// next "## " heading; its "### " subsections are part of it.
func readmeSection(t *testing.T, readme, title string) string {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "\n## "+title+"\n")
	if !ok {
		t.Fatalf(`README has no "## %s" section`, title)
	}
	if i := strings.Index(rest, "\n## "); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// mdTable is a Markdown table: the line above it, which says what the rows
// share, its header cells and its rows' cells.
type mdTable struct {
	intro  string
	header []string
	rows   [][]string
}

// tablesOf returns the Markdown tables of text, outside code blocks.
func tablesOf(text string) []mdTable {
	var tables []mdTable
	var cur *mdTable
	prev, inCode := "", false
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		switch {
		case inCode || !strings.HasPrefix(line, "|"):
			cur = nil
			if strings.TrimSpace(line) != "" {
				prev = line
			}
		case cur == nil:
			tables = append(tables, mdTable{intro: prev, header: cellsOf(line)})
			cur = &tables[len(tables)-1]
		case strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| ---"):
		default:
			cur.rows = append(cur.rows, cellsOf(line))
		}
	}
	return tables
}

func cellsOf(line string) []string {
	cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return cells
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// codeSpans returns what s quotes as `code`.
func codeSpans(s string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// --- Metrics ---

// familyShape is what the README and a scrape both say of a metric family:
// its type and its label names (sorted; a histogram's le is not one).
type familyShape struct {
	typ    string
	labels []string
}

func (s familyShape) String() string {
	return fmt.Sprintf("%s {%s}", s.typ, strings.Join(s.labels, ","))
}

func shapeOf(typ string, labels []string) familyShape {
	labels = slices.Clone(labels)
	slices.Sort(labels)
	return familyShape{typ: typ, labels: slices.Compact(labels)}
}

// documentedMetrics reads every table of the README whose first column is
// "metric". A table with an "extra labels" column is the per-run table:
// its rows have the labels its intro line names, plus their own, or only
// their own where the cell says "only". The exporter metrics (go_*,
// process_*, promhttp_*) have no rows: the sentence that says
// --web.disable-exporter-metrics leaves them out names them by prefix, and
// those prefixes are returned as globs.
func documentedMetrics(t *testing.T, readme string) (families map[string]familyShape, perRun map[string]bool, globs []string) {
	t.Helper()
	families, perRun = map[string]familyShape{}, map[string]bool{}
	for _, tab := range tablesOf(readme) {
		if tab.header[0] != "metric" {
			continue
		}
		typeCol, labelCol := slices.Index(tab.header, "type"), slices.Index(tab.header, "labels")
		extra := labelCol < 0
		if extra {
			labelCol = slices.Index(tab.header, "extra labels")
		}
		if typeCol < 0 || labelCol < 0 {
			t.Fatalf("README metric table %v has no type or labels column", tab.header)
		}
		for _, row := range tab.rows {
			names := codeSpans(row[0])
			if len(names) != 1 || len(row) != len(tab.header) {
				t.Errorf("README metric table row %q: want one `name` in the first cell and %d cells", row, len(tab.header))
				continue
			}
			labels := codeSpans(row[labelCol])
			if extra && !strings.HasPrefix(row[labelCol], "only") {
				labels = append(labels, codeSpans(tab.intro)...)
			}
			if _, dup := families[names[0]]; dup {
				t.Errorf("README documents %s twice", names[0])
			}
			families[names[0]] = shapeOf(row[typeCol], labels)
			perRun[names[0]] = extra
		}
	}
	if len(families) == 0 {
		t.Fatal("README has no metric table (| metric | type | labels | meaning |)")
	}
	for _, paragraph := range strings.Split(readmeSection(t, readme, "Metrics"), "\n\n") {
		if strings.Contains(paragraph, "`--web.disable-exporter-metrics`") && !strings.HasPrefix(paragraph, "|") {
			for _, s := range codeSpans(paragraph) {
				if prefix, ok := strings.CutSuffix(s, "*"); ok {
					globs = append(globs, prefix)
				}
			}
		}
	}
	if len(globs) == 0 {
		t.Error("README's Metrics section names no exporter metrics (`go_*` ... unless `--web.disable-exporter-metrics`)")
	}
	return families, perRun, globs
}

func shapesOf(mfs iter.Seq[*dto.MetricFamily]) map[string]familyShape {
	out := map[string]familyShape{}
	for mf := range mfs {
		name := mf.GetName()
		var labels []string
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName())
			}
		}
		out[name] = shapeOf(strings.ToLower(mf.GetType().String()), labels)
	}
	return out
}

// exporterMetric reports whether the family name is one of the exporter
// metrics, which the README names by prefix.
func exporterMetric(globs []string, name string) bool {
	return slices.ContainsFunc(globs, func(prefix string) bool { return strings.HasPrefix(name, prefix) })
}

// compareShapes reports, both ways, where what the README documents and
// what /metrics serves differ. Families of an exporter-metrics glob need
// no row.
func compareShapes(t *testing.T, documented, served map[string]familyShape, globs []string) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(served)) {
		doc, ok := documented[name]
		switch {
		case !ok && exporterMetric(globs, name):
		case !ok:
			t.Errorf("/metrics: %s (%v) has no row in the README's metric tables", name, served[name])
		case !reflect.DeepEqual(doc, served[name]):
			t.Errorf("/metrics: %s is %v, the README says %v", name, served[name], doc)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(documented)) {
		if _, ok := served[name]; !ok {
			t.Errorf("/metrics: %s has a row in the README but is not served", name)
		}
	}
}

// checkMetricsDocumented starts the binary with every feature that adds
// families or labels, and brings about every state in which families
// exist only some of the time: a state store, an ids_file, two shards, a
// probe-only run, runs seen queued then running (queue waits), finished
// runs (durations, counts), a run the API answers 404 for (fetch error
// reason), the exporter metrics, and --web.openmetrics-created-lines.
func checkMetricsDocumented(t *testing.T, readme string) {
	documented, perRun, globs := documentedMetrics(t, readme)

	env := newE2EEnv(t, 60)
	ids := env.sim.IDs()
	probeOnly := ids[len(ids)-1]
	const shardIndex = 1
	var missing string // a run the API does not know, owned by this shard
	for i := 1; missing == ""; i++ {
		if id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i); (shard.Assignment{Index: shardIndex, Count: 2}).Owns(id) {
			missing = id
		}
	}
	env.write("ids.txt", strings.Join(slices.Concat(ids[:len(ids)-1], []string{missing}), "\n")+"\n")
	p := startExporter(t, env.config(), "--storage.path="+filepath.Join(env.dir, "state"),
		"--shard.count=2", fmt.Sprintf("--shard.index=%d", shardIndex), "--web.openmetrics-created-lines")
	p.waitReady()
	p.waitCycles(1)
	// get returns the body of path, in the format accept asks for.
	get := func(path, accept string) []byte {
		resp, body, err := promScrape(p.url(path), 10*time.Second, accept)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v\n%s", path, resp, err, body)
		}
		return body
	}
	probe := get("/probe?run_id="+probeOnly, "")
	env.clock.Add(int64(3 * time.Minute)) // queued runs start
	waitFor(t, "a queue wait recorded", func() bool { return len(p.lines("workflow_run_queue_wait_seconds{")) > 0 })
	waitFor(t, "the 404 run's fetch error", func() bool {
		return slices.ContainsFunc(p.lines("workflow_run_fetch_error_reason{"), func(l string) bool { return strings.Contains(l, missing) })
	})

	served := shapesOf(maps.Values(p.scrape()))
	for _, name := range collector.FamilyNames() {
		if _, ok := served[name]; !ok {
			t.Errorf("the run metrics store renders %s, but this scrape has none: make the test bring it about", name)
		}
	}
	compareShapes(t, documented, served, globs)
	for _, prefix := range globs {
		found := false
		for name := range served {
			found = found || strings.HasPrefix(name, prefix)
		}
		if !found {
			t.Errorf("the README names %s* among the exporter metrics; the scrape has none", prefix)
		}
	}

	// Protobuf (native histograms) and OpenMetrics (_created lines) carry
	// the same families as the text format.
	pb, err := scrapetest.Families(bytes.NewReader(get("/metrics", acceptProtobuf)), expfmt.NewFormat(expfmt.TypeProtoDelim))
	if err != nil {
		t.Fatalf("the protobuf answer does not decode: %v", err)
	}
	if got := shapesOf(slices.Values(pb)); !reflect.DeepEqual(got, served) {
		t.Errorf("the protobuf answer's families differ from the text format's:\n%v\n%v", got, served)
	}
	checkCreatedLines(t, get("/metrics", acceptOpenMetrics), served, globs)

	// /probe answers per-run families only, under the same names.
	probedFamilies, err := scrapetest.Families(bytes.NewReader(probe), expfmt.NewFormat(expfmt.TypeTextPlain))
	if err != nil {
		t.Fatalf("/probe's answer does not parse: %v", err)
	}
	probed := shapesOf(slices.Values(probedFamilies))
	if len(probed) == 0 {
		t.Errorf("/probe of %s answered no family:\n%s", probeOnly, probe)
	}
	for _, name := range slices.Sorted(maps.Keys(probed)) {
		shape := probed[name]
		if !perRun[name] || !reflect.DeepEqual(documented[name], shape) {
			t.Errorf("/probe: %s (%v) is not a per-run family of the README with these labels (%v)", name, shape, documented[name])
		}
	}
}

// checkCreatedLines: with --web.openmetrics-created-lines, what the README
// says of _created lines holds: an OpenMetrics answer has them for every
// counter and histogram family, and for no other.
func checkCreatedLines(t *testing.T, body []byte, served map[string]familyShape, globs []string) {
	t.Helper()
	types := map[string]string{} // OpenMetrics family name -> type
	created := map[string]bool{} // text-format family name
	for line := range strings.SplitSeq(string(body), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		base, ok := strings.CutSuffix(name, "_created")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		switch types[base] {
		case "counter":
			created[base+"_total"] = true
		case "histogram":
			created[base] = true
		default:
			t.Errorf("OpenMetrics: a _created line for %s, of type %q", base, types[base])
		}
	}
	for _, name := range slices.Sorted(maps.Keys(served)) {
		shape := served[name]
		if exporterMetric(globs, name) {
			continue
		}
		if want := shape.typ == "counter" || shape.typ == "histogram"; created[name] != want {
			t.Errorf("OpenMetrics with --web.openmetrics-created-lines: %s (%s) has _created lines: %v, want %v", name, shape.typ, created[name], want)
		}
	}
}

// --- Flags ---

// helpFlag is a line of --help: "  -h, --[no-]help", "      --web.max-requests=40".
var helpFlag = regexp.MustCompile(`^  (?:-\w, |    )--(\[no-\])?([a-z0-9.-]+)(?:=(\S+))?`)

// checkFlagsDocumented: every flag --help lists has a row in the README's
// Flags table with its default, and every row is a flag. A boolean flag's
// default is "off" (or blank); an empty one's "none".
func checkFlagsDocumented(t *testing.T, readme string) {
	out, err := exec.Command(buildBinary(t), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	defaults := map[string]string{}
	for line := range strings.SplitSeq(string(out), "\n") {
		m := helpFlag.FindStringSubmatch(line)
		switch {
		case m == nil:
		case m[1] != "":
			defaults[m[2]] = "off"
		case m[3] == `""`:
			defaults[m[2]] = "none"
		default:
			v, err := strconv.Unquote(m[3])
			if err != nil {
				v = m[3]
			}
			defaults[m[2]] = v
		}
	}
	if len(defaults) < 10 {
		t.Fatalf("read %d flags from --help:\n%s", len(defaults), out)
	}

	documented := map[string]string{}
	for _, tab := range tablesOf(readmeSection(t, readme, "Flags")) {
		if len(tab.header) < 2 || tab.header[0] != "flag" || tab.header[1] != "default" {
			continue
		}
		for _, row := range tab.rows {
			def := row[1]
			if spans := codeSpans(def); len(spans) == 1 {
				def = spans[0]
			}
			for _, s := range codeSpans(row[0]) {
				if name, ok := strings.CutPrefix(s, "--"); ok {
					documented[name] = def
				}
			}
		}
	}
	if len(documented) == 0 {
		t.Fatal("README's Flags section has no | flag | default | meaning | table")
	}
	for _, name := range slices.Sorted(maps.Keys(defaults)) {
		doc, ok := documented[name]
		switch want := defaults[name]; {
		case !ok:
			t.Errorf("--%s (default %s) has no row in the README's Flags table", name, want)
		case doc != want && !(want == "off" && doc == ""):
			t.Errorf("--%s: the README's default is %q, --help says %q", name, doc, want)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(documented)) {
		if _, ok := defaults[name]; !ok {
			t.Errorf("the README documents --%s, which --help does not list", name)
		}
	}
}

// --- Configuration keys ---

// configKeys walks the YAML keys of the configuration types: every path
// (api, api.timeout, api.authorization.credentials_file, ...) and, apart,
// the keys of Prometheus' HTTP client config, which sit inline in api.
// A struct with yaml tags is a level of keys; anything else (a duration,
// a list, a map) is a value.
func configKeys() (all map[string]bool, own []string, http map[string]bool) {
	all, http = map[string]bool{}, map[string]bool{}
	var walk func(ty reflect.Type, prefix string, inHTTP bool)
	walk = func(ty reflect.Type, prefix string, inHTTP bool) {
		for ty.Kind() == reflect.Pointer {
			ty = ty.Elem()
		}
		for i := range ty.NumField() {
			f := ty.Field(i)
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if tag == "" || tag == "-" {
				continue
			}
			if strings.Contains(opts, "inline") && hasYAMLKeys(f.Type) {
				walk(f.Type, prefix, inHTTP || f.Type == reflect.TypeFor[promconfig.HTTPClientConfig]())
				continue
			}
			path := prefix + name
			all[path] = true
			if inHTTP && strings.Count(path, ".") == 1 {
				http[path] = true
			}
			if hasYAMLKeys(f.Type) {
				walk(f.Type, path+".", inHTTP)
			} else if !inHTTP {
				own = append(own, path)
			}
		}
	}
	walk(reflect.TypeFor[config.Config](), "", false)
	return all, own, http
}

func hasYAMLKeys(ty reflect.Type) bool {
	for ty.Kind() == reflect.Pointer {
		ty = ty.Elem()
	}
	if ty.Kind() != reflect.Struct {
		return false
	}
	for i := range ty.NumField() {
		if ty.Field(i).Tag.Get("yaml") != "" {
			return true
		}
	}
	return false
}

// yamlPaths returns every key path of a YAML document.
func yamlPaths(v any, prefix string, out map[string]bool) {
	m, ok := v.(map[any]any)
	if !ok {
		return
	}
	for k, child := range m {
		path := prefix + fmt.Sprint(k)
		out[path] = true
		yamlPaths(child, path+".", out)
	}
}

// defaultValues returns each key's value in config.Default(), as YAML.
func defaultValues(t *testing.T) map[string]string {
	t.Helper()
	b, err := yaml.Marshal(config.Default())
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.MapSlice
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(ms yaml.MapSlice, prefix string)
	walk = func(ms yaml.MapSlice, prefix string) {
		for _, item := range ms {
			path := prefix + fmt.Sprint(item.Key)
			if child, ok := item.Value.(yaml.MapSlice); ok {
				walk(child, path+".")
				continue
			}
			v, _ := yaml.Marshal(item.Value)
			out[path] = strings.TrimSpace(string(v))
		}
	}
	walk(doc, "")
	return out
}

// checkConfigDocumented: every key of the configuration has a row in the
// README's Configuration table, with the default the code has, and is in
// its YAML example; Prometheus' HTTP client config, inline in api, is the
// one row that names its keys. Every key of the table and the YAML exists.
func checkConfigDocumented(t *testing.T, readme string) {
	all, own, httpKeys := configKeys()
	if len(own) < 10 || len(httpKeys) < 5 {
		t.Fatalf("the walk of the config types found %d keys and %d HTTP client keys", len(own), len(httpKeys))
	}
	sec := readmeSection(t, readme, "Configuration")

	_, rest, ok := strings.Cut(sec, "```yaml\n")
	if !ok {
		t.Fatal("README's Configuration section has no ```yaml example")
	}
	example, _, _ := strings.Cut(rest, "```")
	var doc any
	if err := yaml.Unmarshal([]byte(example), &doc); err != nil {
		t.Fatalf("README's Configuration YAML does not parse: %v", err)
	}
	inYAML := map[string]bool{}
	yamlPaths(doc, "", inYAML)

	rows := map[string][]string{} // key -> its row
	var httpRow []string
	for _, tab := range tablesOf(sec) {
		if len(tab.header) < 2 || tab.header[0] != "key" || tab.header[1] != "default" {
			continue
		}
		for _, row := range tab.rows {
			keys := codeSpans(row[0])
			if len(keys) > 1 {
				httpRow = keys
			}
			for _, k := range keys {
				rows[k] = row
			}
		}
	}
	if len(rows) == 0 {
		t.Fatal("README's Configuration section has no | key | default | meaning | table")
	}

	defaults := defaultValues(t)
	for _, key := range own {
		row, ok := rows[key]
		if !ok {
			t.Errorf("config key %s has no row in the README's Configuration table", key)
			continue
		}
		if !inYAML[key] {
			t.Errorf("config key %s is not in the README's Configuration YAML", key)
		}
		doc := row[1]
		if spans := codeSpans(doc); len(spans) == 1 {
			doc = spans[0]
		} else if doc == "none" || doc == "(required)" {
			doc = `""`
		}
		if doc != defaults[key] {
			t.Errorf("config key %s: the README's default is %s, the code's %s", key, row[1], defaults[key])
		}
	}
	if len(httpRow) == 0 || !slices.ContainsFunc(httpRow, func(k string) bool { return httpKeys[k] }) {
		t.Errorf("README's Configuration table has no row for Prometheus' HTTP client config (`api.authorization`, `api.tls_config`, …)")
	}
	for _, k := range httpRow {
		if !httpKeys[k] {
			t.Errorf("README's Configuration table names %s among the HTTP client config keys; it is not one", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(rows)) {
		if !all[k] {
			t.Errorf("README's Configuration table documents %s, which is no config key", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(inYAML)) {
		if !all[k] {
			t.Errorf("README's Configuration YAML has %s, which is no config key", k)
		}
	}
}
