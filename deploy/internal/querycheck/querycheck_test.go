package querycheck

import (
	"slices"
	"strings"
	"testing"
)

const exposition = `# HELP q_depth Queued.
# TYPE q_depth gauge
q_depth 0
# TYPE pushes_total counter
pushes_total{blueprint="api",result="ok"} 1
pushes_total{blueprint="api",result="failed"} 0
# TYPE apply_seconds histogram
apply_seconds_bucket{le="0.1"} 0
apply_seconds_bucket{le="+Inf"} 0
apply_seconds_sum 0
apply_seconds_count 0
# TYPE requests_seconds histogram
requests_seconds_bucket{route="a",le="+Inf"} 0
requests_seconds_sum{route="a"} 0
requests_seconds_count{route="a"} 0
# TYPE gc_seconds summary
gc_seconds{quantile="0.5"} 0
gc_seconds_sum 0
gc_seconds_count 0
# TYPE last_success gauge
last_success{type="resync"} 0
`

func env(t *testing.T) Env {
	t.Helper()
	ex, err := ParseExposition(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	return Env{Exports: ex, TargetLabels: []string{"job", "namespace", "pod"},
		Builtin: map[string][]string{"up": nil, "ALERTS": {"alertname", "alertstate"}}}
}

func TestParseExposition(t *testing.T) {
	t.Parallel()
	ex := env(t).Exports
	for name, want := range map[string]string{
		"q_depth": "gauge", "pushes_total": "counter", "apply_seconds_bucket": "counter", "apply_seconds_count": "counter",
		"gc_seconds": "summary", "gc_seconds_sum": "counter",
	} {
		if ex[name].Type != want {
			t.Errorf("%s: type %q, want %q", name, ex[name].Type, want)
		}
	}
	if _, ok := ex["apply_seconds"]; ok {
		t.Error("a histogram's family name is not a series name")
	}
	if !ex["requests_seconds_bucket"].Labels["le"] || !ex["requests_seconds_bucket"].Labels["route"] || ex["requests_seconds_count"].Labels["le"] {
		t.Errorf("bucket labels %v, count labels %v", ex["requests_seconds_bucket"].Labels, ex["requests_seconds_count"].Labels)
	}
	if _, err := ParseExposition(strings.NewReader("# TYPE x counter\nx{a=\"1\" 1\n")); err == nil {
		t.Error("a broken exposition parsed")
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	e := env(t)
	for _, tc := range []struct {
		name, expr, want string
		used             []string
	}{
		{"gauge", `q_depth > 100`, "", []string{"q_depth"}},
		{"target labels", `q_depth{job="portbridge", namespace=~".*"}`, "", nil},
		{"rate by labels", `sum by (blueprint, result) (rate(pushes_total{result="ok"}[5m]))`, "", nil},
		{"quantile", `histogram_quantile(0.99, sum by (route, le) (rate(requests_seconds_bucket[5m])))`, "", nil},
		{"quantile result labels", `sum by (route) (histogram_quantile(0.99, sum by (route, le) (rate(requests_seconds_bucket[5m]))))`, "", nil},
		{"ratio", `sum by (job) (rate(requests_seconds_count{route="a"}[5m])) / sum by (job) (rate(requests_seconds_count[5m])) > 0.5`, "", nil},
		{"and on", `(time() - max by (job, pod) (last_success{type="resync"}) > 7200) and on (job, pod) (time() - max by (job, pod) (up) > 1)`, "", []string{"last_success", "up"}},
		{"deriv of a gauge", `q_depth > 100 and deriv(q_depth[15m]) > 0`, "", nil},
		{"label_replace adds a label", `sum by (x) (label_replace(q_depth, "x", "$1", "job", "(.*)"))`, "", nil},
		{"builtin", `count(ALERTS{alertname=~"P.*", alertstate="firing"}) or vector(0)`, "", []string{"ALERTS"}},
		{"absent", `absent(up{job="portbridge"})`, "", nil},
		{"without", `sum without (result) (pushes_total)`, "", nil},

		{"unknown metric", `sum(rate(pushes_totl[5m]))`, "metric pushes_totl is not exported", nil},
		{"unknown label", `pushes_total{blueprnt="api"}`, `label "blueprnt" is not a label of pushes_total`, nil},
		{"by unknown label", `sum by (kind) (rate(pushes_total[5m]))`, `label "kind" is not a label of the aggregated series`, nil},
		{"by a label the inner sum dropped", `sum by (result) (sum by (blueprint) (pushes_total))`, `label "result" is not a label`, nil},
		{"on a label of one side", `pushes_total and on (blueprint) q_depth`, `on (blueprint): label "blueprint" is not on both sides`, nil},
		{"ignoring a label of neither", `pushes_total / ignoring (kind) pushes_total`, `label "kind" is on neither side`, nil},
		{"rate of a gauge", `rate(q_depth[5m])`, "rate() of q_depth, a gauge (want a counter)", nil},
		{"deriv of a counter", `deriv(pushes_total[5m])`, "deriv() of pushes_total, a counter (want a gauge)", nil},
		{"quantile without le", `histogram_quantile(0.9, sum(rate(apply_seconds_bucket[5m])))`, "without an le label", nil},
		{"quantile of the family name", `histogram_quantile(0.9, rate(apply_seconds[5m]))`, "metric apply_seconds is not exported", nil},
		{"no metric name", `{job="portbridge"}`, "has no metric name", nil},
		{"syntax", `sum(rate(pushes_total[5m])`, "parse:", nil},
		{"label_replace unknown source", `label_replace(q_depth, "x", "$1", "kind", "(.*)")`, `source label "kind"`, nil},
		{"group_left include", `pushes_total * on (job) group_left (kind) q_depth`, `label "kind" is not on the one side`, nil},
		{"builtin label", `up{alertname="x"}`, `label "alertname" is not a label of up`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			used, err := e.Check(tc.expr)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("%s: %v", tc.expr, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: err %v, want %q", tc.expr, err, tc.want)
			}
			if tc.used != nil && !slices.Equal(used, tc.used) {
				t.Errorf("used %v, want %v", used, tc.used)
			}
		})
	}
}

func TestCheckLabel(t *testing.T) {
	t.Parallel()
	e := env(t)
	if _, err := e.CheckLabel(`q_depth{job=~".*"}`, "namespace"); err != nil {
		t.Error(err)
	}
	if _, err := e.CheckLabel(`pushes_total`, "blueprint"); err != nil {
		t.Error(err)
	}
	if _, err := e.CheckLabel(`q_depth`, "blueprint"); err == nil || !strings.Contains(err.Error(), `label "blueprint" is not a label of q_depth`) {
		t.Errorf("err %v", err)
	}
}

const dashboard = `{
  "uid": "x", "title": "x",
  "templating": {"list": [
    {"name": "datasource", "type": "datasource", "query": "prometheus"},
    {"name": "job", "type": "query", "query": {"query": "label_values(q_depth, job)", "refId": "A"}, "allValue": ".+"},
    {"name": "pod", "type": "query", "query": "label_values(q_depth{job=~\"$job\"}, pod)"},
    {"name": "q", "type": "constant", "query": "0.99"}
  ]},
  "panels": [
    {"id": 1, "type": "timeseries", "title": "a", "targets": [{"refId": "A", "expr": "sum(rate(pushes_total{job=~\"$job\", pod=~\"${pod}\"}[$__rate_interval]))"}]},
    {"id": 2, "type": "row", "title": "r", "collapsed": true, "panels": [
      {"id": 3, "type": "timeseries", "title": "b", "targets": [{"refId": "A", "expr": "histogram_quantile($q, sum by (le) (rate(apply_seconds_bucket[[[job]]])))"}]}
    ]}
  ]
}`

func TestDashboardQueries(t *testing.T) {
	t.Parallel()
	d, err := ParseDashboard([]byte(dashboard))
	if err != nil {
		t.Fatal(err)
	}
	qs, err := d.Queries()
	if err != nil {
		t.Fatal(err)
	}
	want := []Query{
		{"variable job", "q_depth", "job"},
		{"variable pod", `q_depth{job=~".+"}`, "pod"},
		{`panel 1 "a" target A`, `sum(rate(pushes_total{job=~".+", pod=~".*"}[5m]))`, ""},
		{`panel 3 "b" target A`, `histogram_quantile(0.99, sum by (le) (rate(apply_seconds_bucket[.+])))`, ""},
	}
	if !slices.Equal(qs, want) {
		t.Errorf("queries\n%q\nwant\n%q", qs, want)
	}
	if n := len(d.AllPanels()); n != 3 {
		t.Errorf("%d panels, want 3 (collapsed rows included)", n)
	}

	for _, tc := range []struct{ name, old, new, want string }{
		{"undefined variable", `$__rate_interval`, `$interval`, "variable $interval is not defined by the dashboard"},
		{"datasource variable in a query", `$__rate_interval`, `$datasource`, "variable $datasource (type datasource) cannot stand in a query"},
		{"unsupported variable query", `label_values(q_depth, job)`, `metrics(q_.*)`, "neither label_values(selector, label) nor query_result(expr)"},
		{"target without expr", `"expr": "sum(rate(`, `"exp": "sum(rate(`, `panel 1 "a" target A: no expr`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc := strings.Replace(dashboard, tc.old, tc.new, 1)
			if doc == dashboard {
				t.Fatalf("replacement %q not found", tc.old)
			}
			d, err := ParseDashboard([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.Queries(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := ParseDashboard([]byte(`{"panels": {}}`)); err == nil {
		t.Error("a malformed dashboard decoded")
	}
}
