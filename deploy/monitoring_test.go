// Tests of the monitoring files: the alert rules and the Grafana dashboard
// are rendered through the chart and the kustomize components and validated
// like every other object, and every PromQL expression in them is parsed
// with Prometheus' own parser and checked against what the real sidecar
// exports on /metrics.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/portbridge/portbridge/deploy/internal/kube"
	"github.com/portbridge/portbridge/deploy/internal/querycheck"
	"github.com/portbridge/portbridge/deploy/internal/render"
)

const (
	monitoringDir = "helm/portbridge/files/monitoring"
	rulesFile     = monitoringDir + "/prometheusrule.yaml"
	dashboardFile = monitoringDir + "/portbridge-dashboard.json"
)

// loadRules decodes the one rules file strictly into the operator's type.
func loadRules(t *testing.T) *monitoringv1.PrometheusRule {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kube.Decode(rulesFile, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := kube.CheckRefs(objs, kube.External{}); err != nil {
		t.Fatal(err)
	}
	return find[*monitoringv1.PrometheusRule](t, objs, "PrometheusRule", "portbridge")
}

func readDashboard(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkMonitoring checks the monitoring objects of a rendered stream: the
// rules are those of the rules file, the dashboard ConfigMap carries the
// dashboard file and Grafana's sidecar label, and the scrape sets the job
// the rules select.
func checkMonitoring(t *testing.T, objs []kube.Object, scrape string) {
	t.Helper()
	rule := find[*monitoringv1.PrometheusRule](t, objs, "PrometheusRule", "")
	if want := loadRules(t).Spec; !reflect.DeepEqual(rule.Spec, want) {
		t.Errorf("rendered rules differ from %s:\n%+v\nwant\n%+v", rulesFile, rule.Spec, want)
	}
	var cm *corev1.ConfigMap
	for _, o := range objs {
		if c, ok := o.Obj.(*corev1.ConfigMap); ok && strings.HasSuffix(c.Name, "dashboard") {
			cm = c
		}
	}
	if cm == nil {
		t.Fatalf("no dashboard ConfigMap among %s", kube.Kinds(objs))
	}
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v lack grafana_dashboard: \"1\"", cm.Labels)
	}
	if got := cm.Data["portbridge-dashboard.json"]; strings.TrimSpace(got) != strings.TrimSpace(readDashboard(t)) {
		t.Errorf("dashboard ConfigMap does not carry %s (%d bytes)", dashboardFile, len(got))
	}
	var relabel []monitoringv1.RelabelConfig
	switch scrape {
	case "ServiceMonitor":
		sm := find[*monitoringv1.ServiceMonitor](t, objs, scrape, "")
		relabel = sm.Spec.Endpoints[0].RelabelConfigs
	case "PodMonitor":
		pm := find[*monitoringv1.PodMonitor](t, objs, scrape, "")
		relabel = pm.Spec.PodMetricsEndpoints[0].RelabelConfigs
	}
	if len(relabel) != 1 || relabel[0].TargetLabel != "job" || relabel[0].Replacement == nil || *relabel[0].Replacement != "portbridge" {
		t.Errorf("%s relabelings %+v, want job set to portbridge (the rules select job=\"portbridge\")", scrape, relabel)
	}
}

func TestMonitoringManifests(t *testing.T) {
	t.Parallel()
	base := "image: {repository: r.example/pb}\nexistingSecret: portbridge\n"
	all := base + "monitoring: {serviceMonitor: {enabled: true}, prometheusRule: {enabled: true}, dashboard: {enabled: true}}\n"
	helm := func(t *testing.T, vals string) []kube.Object {
		t.Helper()
		v := values(t, vals)
		if err := render.Lint(chartDir, v); err != nil {
			t.Fatal(err)
		}
		m, err := render.Helm(context.Background(), chartDir, "pb", "backstage", v)
		if err != nil {
			t.Fatal(err)
		}
		return validate(t, "helm", m, ext("portbridge"))
	}
	kustomize := func(t *testing.T, dir string) []kube.Object {
		t.Helper()
		m, err := render.Kustomize(dir)
		if err != nil {
			t.Fatal(err)
		}
		return validate(t, dir, m, ext("portbridge"))
	}

	t.Run("chart: off by default", func(t *testing.T) {
		t.Parallel()
		for _, o := range helm(t, base) {
			if o.Kind == "PrometheusRule" || o.Kind == "ServiceMonitor" || strings.HasSuffix(o.Name, "-dashboard") {
				t.Errorf("%s rendered with monitoring disabled", o)
			}
		}
	})
	t.Run("chart: all on", func(t *testing.T) {
		t.Parallel()
		objs := helm(t, all)
		checkMonitoring(t, objs, "ServiceMonitor")
		sm := find[*monitoringv1.ServiceMonitor](t, objs, "ServiceMonitor", "pb-portbridge")
		if ep := sm.Spec.Endpoints[0]; ep.Port != "http" || ep.Path != "/metrics" || ep.Interval != "30s" {
			t.Errorf("endpoint %+v", ep)
		}
	})
	t.Run("chart: options", func(t *testing.T) {
		t.Parallel()
		objs := helm(t, base+`monitoring:
  serviceMonitor: {enabled: true, labels: {release: kps}, interval: 1m, scrapeTimeout: 20s}
  prometheusRule:
    enabled: true
    labels: {release: kps}
    disabledAlerts: [PortbridgeConflicts, PortbridgeVerifyStale]
    ruleLabels: {team: platform, severity: page}
    additionalRules: [{alert: MyStaleResync, expr: 'time() - portbridge_resync_last_success_timestamp_seconds{type="resync"} > 14400', for: 10m}]
  dashboard: {enabled: true, namespace: monitoring, labels: {grafana_dashboard: "1", team: platform}, annotations: {grafana_folder: Backstage}}
`)
		sm := find[*monitoringv1.ServiceMonitor](t, objs, "ServiceMonitor", "")
		if sm.Labels["release"] != "kps" || sm.Spec.Endpoints[0].Interval != "1m" || sm.Spec.Endpoints[0].ScrapeTimeout != "20s" {
			t.Errorf("ServiceMonitor labels %v endpoint %+v", sm.Labels, sm.Spec.Endpoints[0])
		}
		pr := find[*monitoringv1.PrometheusRule](t, objs, "PrometheusRule", "")
		if pr.Labels["release"] != "kps" || len(pr.Spec.Groups) != 2 || pr.Spec.Groups[1].Name != "portbridge-custom" ||
			pr.Spec.Groups[1].Rules[0].Alert != "MyStaleResync" {
			t.Fatalf("PrometheusRule labels %v groups %+v", pr.Labels, pr.Spec.Groups)
		}
		want := len(loadRules(t).Spec.Groups[0].Rules) - 2
		if got := pr.Spec.Groups[0].Rules; len(got) != want {
			t.Errorf("%d rules, want %d (two disabled)", len(got), want)
		}
		for _, r := range pr.Spec.Groups[0].Rules {
			if r.Alert == "PortbridgeConflicts" || r.Alert == "PortbridgeVerifyStale" {
				t.Errorf("disabled alert %s rendered", r.Alert)
			}
			if r.Labels["team"] != "platform" || r.Labels["severity"] != "page" {
				t.Errorf("%s labels %v, want ruleLabels added and winning", r.Alert, r.Labels)
			}
		}
		var cm *corev1.ConfigMap
		for _, o := range objs {
			if c, ok := o.Obj.(*corev1.ConfigMap); ok && c.Name == "pb-portbridge-dashboard" {
				cm = c
			}
		}
		if cm == nil || cm.Namespace != "monitoring" || cm.Annotations["grafana_folder"] != "Backstage" || cm.Labels["team"] != "platform" {
			t.Errorf("dashboard ConfigMap %+v", cm)
		}
	})
	t.Run("chart: unknown disabled alert", func(t *testing.T) {
		t.Parallel()
		_, err := render.Helm(context.Background(), chartDir, "pb", "backstage",
			values(t, base+"monitoring: {prometheusRule: {enabled: true, disabledAlerts: [PortbridgeDwon]}}\n"))
		if err == nil || !strings.Contains(err.Error(), "PortbridgeDwon is not an alert of the chart") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("kustomize: standalone with the monitoring component", func(t *testing.T) {
		t.Parallel()
		objs := kustomize(t, overlay(t, []string{"kustomize/standalone"}, []string{"kustomize/components/monitoring"}, ""))
		checkMonitoring(t, objs, "ServiceMonitor")
	})
	t.Run("kustomize: sidecar with the monitoring-sidecar component", func(t *testing.T) {
		t.Parallel()
		objs := kustomize(t, overlay(t, []string{"kustomize/sidecar"}, []string{"kustomize/components/monitoring-sidecar"}, ""))
		checkMonitoring(t, objs, "PodMonitor")
	})
	// Next to the official chart the component is built on its own; its
	// PodMonitor must find the sidecar's port in the chart's Backstage pod.
	t.Run("official chart with the monitoring-sidecar component", func(t *testing.T) {
		t.Parallel()
		comp, err := render.Kustomize(overlay(t, nil, []string{"kustomize/components/monitoring-sidecar"}, ""))
		if err != nil {
			t.Fatal(err)
		}
		objs := validate(t, "official chart + monitoring-sidecar", officialChart(t, withImage(t))+"\n---\n"+comp, ext("portbridge"))
		checkMonitoring(t, objs, "PodMonitor")
	})
}

// The labels a scrape through the Prometheus Operator adds to every series
// (job, instance; namespace, pod, container, service, endpoint from the
// ServiceMonitor/PodMonitor); queries may select and group by them.
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "service", "endpoint"}

// Series Prometheus makes itself, with the labels they carry besides the
// target labels: up per target, and ALERTS per alert (plus the alert's own
// labels; ours all have severity).
var prometheusSeries = map[string][]string{
	"up":     nil,
	"ALERTS": {"alertname", "alertstate", "severity"},
}

// TestMonitoringQueries runs the real sidecar (`portbridge dev`: emulated
// catalog and Port, a first resync), makes it delete an entity and meet a
// 429 so series that only exist after such events are exported, scrapes
// /metrics, and checks every PromQL expression of the rules and of the
// dashboard against it.
func TestMonitoringQueries(t *testing.T) {
	t.Parallel()
	env := querycheck.Env{Exports: scrapeSidecar(t), TargetLabels: targetLabels, Builtin: prometheusSeries}
	rule := loadRules(t)

	used := map[string]bool{}
	check := func(where, expr, label string) {
		var names []string
		var err error
		if label != "" {
			names, err = env.CheckLabel(expr, label)
		} else {
			names, err = env.Check(expr)
		}
		if err != nil {
			t.Errorf("%s: %s\n  %v", where, expr, err)
		}
		for _, n := range names {
			used[n] = true
		}
	}
	for _, q := range ruleQueries(rule) {
		check(q.Where, q.Expr, "")
	}
	dash, err := querycheck.ParseDashboard([]byte(readDashboard(t)))
	if err != nil {
		t.Fatal(err)
	}
	qs, err := dash.Queries()
	if err != nil {
		t.Error(err)
	}
	for _, q := range qs {
		check(q.Where, q.Expr, q.Label)
	}
	if len(qs) < 40 || len(used) < 30 {
		t.Errorf("%d dashboard queries using %d metrics: the dashboard was not read", len(qs), len(used))
	}
	// Families no panel or rule shows are only logged: other work adds
	// metrics, and a new one need not wait for a panel.
	family := func(name string) string {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if f, ok := strings.CutSuffix(name, suffix); ok {
				if _, hist := env.Exports[f+"_bucket"]; hist {
					return f
				}
			}
		}
		return name
	}
	shown := map[string]bool{}
	for name := range used {
		shown[family(name)] = true
	}
	unused := map[string]bool{}
	for name := range env.Exports {
		if f := family(name); strings.HasPrefix(f, "portbridge_") && !shown[f] {
			unused[f] = true
		}
	}
	t.Logf("exported, on no panel or rule: %v", slices.Sorted(maps.Keys(unused)))

	// The check itself must fail on what is wrong: a rule naming a metric the
	// sidecar does not export (the acceptance case), a label the metric lacks,
	// a counter treated as a gauge.
	for _, tc := range []struct{ name, old, new, want string }{
		{"metric that does not exist", "portbridge_queue_oldest_seconds > 600", "portbridge_queue_oldest_age_seconds > 600", "metric portbridge_queue_oldest_age_seconds is not exported"},
		{"label the metric lacks", `portbridge_deletions_refused_total{reason!="disabled"}`, `portbridge_deletions_refused_total{cause!="disabled"}`, `label "cause" is not a label of portbridge_deletions_refused_total`},
		{"by a label the metric lacks", "sum by (job, namespace, pod, path, kind) (rate(portbridge_entity_failures_total", "sum by (job, namespace, pod, blueprint) (rate(portbridge_entity_failures_total", `label "blueprint" is not a label of the aggregated series`},
		{"rate of a gauge", "portbridge_parked_entities > 0", "rate(portbridge_parked_entities[5m]) > 0", "rate() of portbridge_parked_entities, a gauge"},
		{"syntax", "portbridge_queue_quarantined > 0", "portbridge_queue_quarantined >", "parse:"},
	} {
		t.Run("broken: "+tc.name, func(t *testing.T) {
			broken := loadRules(t)
			var errs []error
			replaced := false
			for _, q := range ruleQueries(broken) {
				expr := q.Expr
				if strings.Contains(expr, tc.old) {
					expr, replaced = strings.Replace(expr, tc.old, tc.new, 1), true
				}
				if _, err := env.Check(expr); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", q.Where, err))
				}
			}
			if !replaced {
				t.Fatalf("no rule contains %q", tc.old)
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
				t.Errorf("errors %v, want one with %q", errs, tc.want)
			}
		})
	}
}

// ruleQueries lists the expressions of a PrometheusRule.
func ruleQueries(pr *monitoringv1.PrometheusRule) []querycheck.Query {
	var out []querycheck.Query
	for _, g := range pr.Spec.Groups {
		for i, r := range g.Rules {
			name := r.Alert + r.Record
			if name == "" {
				name = fmt.Sprint(i)
			}
			out = append(out, querycheck.Query{Where: "rule " + g.Name + "/" + name, Expr: r.Expr.String()})
		}
	}
	return out
}

var severities = []string{"critical", "warning", "info"}

// TestAlertRules holds the rules to Prometheus' own rule-file validation
// (what `promtool check rules` runs: expressions, durations, label names,
// annotation templates) and to what the README promises: every alert has a
// severity, a summary, a description and a runbook link to README.md's
// alert table, and that table lists exactly these alerts.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	rule := loadRules(t)
	groups, err := yaml.Marshal(map[string]any{"groups": rule.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	if _, errs := rulefmt.Parse(groups, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler)); len(errs) > 0 {
		t.Errorf("Prometheus rejects the rules: %v", errs)
	}
	// A negative control: the validation sees a broken annotation template.
	bad := bytes.Replace(groups, []byte("{{ $labels.instance }}"), []byte("{{ $labels.instance"), 1)
	if _, errs := rulefmt.Parse(bad, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler)); len(errs) == 0 {
		t.Error("rulefmt accepted a broken template; the check proves nothing")
	}

	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(string(readme))
	table := alertTable(string(readme))
	var names []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
			if !strings.HasPrefix(r.Alert, "Portbridge") {
				t.Errorf("alert %s: names start with Portbridge (the dashboard's ALERTS panel selects Portbridge.*)", r.Alert)
			}
			if !slices.Contains(severities, r.Labels["severity"]) {
				t.Errorf("alert %s: severity %q, want one of %v", r.Alert, r.Labels["severity"], severities)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s: no %s annotation", r.Alert, a)
				}
			}
			const prefix = "https://github.com/portbridge/portbridge/blob/main/README.md#"
			if u := r.Annotations["runbook_url"]; !strings.HasPrefix(u, prefix) || !anchors[strings.TrimPrefix(u, prefix)] {
				t.Errorf("alert %s: runbook_url %s is not a heading of README.md", r.Alert, u)
			}
			if _, ok := table[r.Alert]; !ok {
				t.Errorf("alert %s is not in README.md's alert table", r.Alert)
			}
		}
	}
	for name := range table {
		if !slices.Contains(names, name) {
			t.Errorf("README.md's alert table lists %s, which the rules do not have", name)
		}
	}
}

// markdownAnchors returns the GitHub anchors of a Markdown file's headings.
func markdownAnchors(md string) map[string]bool {
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^\p{L}\p{N}\- ]`)
	for _, line := range strings.Split(md, "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			h = strings.TrimLeft(h, "#")
			out[strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(strings.TrimSpace(h)), ""), " ", "-")] = true
		}
	}
	return out
}

// alertTable returns the alert names of the README's table rows that start
// with | `Portbridge….
func alertTable(md string) map[string]bool {
	out := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(Portbridge\\w+)`").FindAllStringSubmatch(md, -1) {
		out[m[1]] = true
	}
	return out
}

// TestDashboard checks the dashboard's structure: a Prometheus data source
// variable every panel and target uses, the job/namespace/pod selectors, and
// panels with unique ids that fit the grid.
func TestDashboard(t *testing.T) {
	t.Parallel()
	d, err := querycheck.ParseDashboard([]byte(readDashboard(t)))
	if err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q title %q", d.UID, d.Title)
	}
	vars := map[string]querycheck.Variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if ds := vars["datasource"]; ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		t.Errorf("datasource variable %+v, want a Prometheus data source variable", ds)
	}
	for _, name := range []string{"job", "namespace", "pod"} {
		if v := vars[name]; v.Type != "query" || !v.IncludeAll || v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %s %+v, want a query variable on ${datasource} with All", name, v)
		}
	}
	ids := map[int]bool{}
	for _, p := range d.AllPanels() {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d is zero or used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W < 1 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H < 1 {
			t.Errorf("panel %q: gridPos %+v does not fit the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || p.Description == "" || len(p.Targets) == 0 {
			t.Errorf("panel %d: title %q, description %q, %d targets", p.ID, p.Title, p.Description, len(p.Targets))
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want ${datasource}", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s: datasource %+v, want ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
			for _, v := range []string{"$job", "$namespace", "$pod"} {
				if !strings.Contains(tg.Expr, v) {
					t.Errorf("panel %q target %s does not select %s: %s", p.Title, tg.RefID, v, tg.Expr)
				}
			}
		}
	}
}

// devURLs are what `portbridge dev` prints once its first resync is done.
var devURLs = map[string]*regexp.Regexp{
	"metrics": regexp.MustCompile(`Metrics\s+(http://\S+)/metrics`),
	"catalog": regexp.MustCompile(`Emulated Backstage catalog\s+(http://\S+)/api/catalog`),
	"port":    regexp.MustCompile(`Emulated Port API\s+(http://\S+)/v1`),
}

// scrapeSidecar builds and runs `portbridge dev` from the root module on free
// loopback ports, makes it push through a 429 and delete an entity, and
// returns what /metrics exports then.
func scrapeSidecar(t *testing.T) querycheck.Exports {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "portbridge")
	build := exec.Command("go", "build", "-o", bin, "./sidecar")
	build.Dir = ".." // the product's module
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the sidecar: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bin, "dev", "--listen", "127.0.0.1:0", "--catalog-listen", "127.0.0.1:0", "--port-listen", "127.0.0.1:0",
		"--poll", "200ms", "--delete-grace", "200ms", "--log-format", "json")
	cmd.Dir = ".." // for the example catalog
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	urls := map[string]string{}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			for k, re := range devURLs {
				if m := re.FindStringSubmatch(sc.Text()); m != nil && len(urls) < len(devURLs) {
					urls[k] = m[1]
					if len(urls) == len(devURLs) {
						close(found)
					}
				}
			}
		}
	}()
	select {
	case <-found:
	case <-ctx.Done():
		t.Fatalf("portbridge dev printed no URLs: %v\n%s", ctx.Err(), stderr.String())
	}

	do := func(method, url, contentType, body string) string {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		req.Header.Set("Accept", "text/plain;version=0.0.4")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %s\n%s", method, url, resp.Status, b)
		}
		return string(b)
	}
	waitFor := func(what, url, substr string) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !strings.Contains(do("GET", url, "", ""), substr); {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no %q at %s within a minute\n%s", what, substr, url, stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Port answers the next two bulk upserts with 429; a new entity goes
	// through them; then it is deleted from the catalog.
	do("POST", urls["port"]+"/_emulator/faults", "application/json",
		`{"status":429,"retryAfter":"1s","count":2,"route":"POST /v1/blueprints/{b}/entities/bulk"}`)
	do("POST", urls["catalog"]+"/_emulator/entities", "application/yaml",
		"apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: monitoring-probe\nspec:\n  type: service\n  lifecycle: experimental\n  owner: team-a\n")
	waitFor("push through 429", urls["port"]+"/_emulator/dump", `"component:default/monitoring-probe"`)
	do("DELETE", urls["catalog"]+"/_emulator/entities/component/default/monitoring-probe", "", "")
	waitFor("delete", urls["metrics"]+"/metrics", "portbridge_port_deletes_total{")

	exports, err := querycheck.ParseExposition(strings.NewReader(do("GET", urls["metrics"]+"/metrics", "", "")))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scraped %d series names from the sidecar", len(exports))
	if _, ok := exports["portbridge_queue_depth"]; !ok {
		t.Fatalf("the scrape lacks portbridge_queue_depth: %v", slices.Sorted(maps.Keys(exports)))
	}
	return exports
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the test's
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
