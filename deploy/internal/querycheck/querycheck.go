// Package querycheck checks PromQL expressions (alert rules, Grafana panel
// targets) against the metrics a program really exports: every expression is
// parsed with Prometheus' own parser, every metric it names must be in the
// scraped exposition (or be one of the series Prometheus makes itself, named
// explicitly), every label in a selector, a by/on clause or a label function
// must exist on what it applies to, rate-like functions get counters and
// deriv-like ones gauges, and histogram_quantile gets buckets.
package querycheck

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Metric is one exported series name: its type as the exposition declares it
// (the _bucket, _sum and _count series of a histogram or summary are
// counters) and the label names its series carry.
type Metric struct {
	Type   string
	Labels map[string]bool
}

// Exports maps every exported series name to its Metric.
type Exports map[string]Metric

// ParseExposition reads a Prometheus text exposition (what /metrics serves
// for Accept: text/plain) into Exports.
func ParseExposition(r io.Reader) (Exports, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse the metrics exposition: %w", err)
	}
	out := Exports{}
	add := func(name, typ string, lbls []*dto.LabelPair, extra ...string) {
		m, ok := out[name]
		if !ok {
			m = Metric{Type: typ, Labels: map[string]bool{}}
			out[name] = m
		}
		for _, l := range lbls {
			m.Labels[l.GetName()] = true
		}
		for _, l := range extra {
			m.Labels[l] = true
		}
	}
	for name, f := range fams {
		for _, s := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				add(name+"_bucket", "counter", s.GetLabel(), "le")
				add(name+"_sum", "counter", s.GetLabel())
				add(name+"_count", "counter", s.GetLabel())
			case dto.MetricType_SUMMARY:
				add(name, "summary", s.GetLabel(), "quantile")
				add(name+"_sum", "counter", s.GetLabel())
				add(name+"_count", "counter", s.GetLabel())
			default:
				add(name, strings.ToLower(f.GetType().String()), s.GetLabel())
			}
		}
	}
	return out, nil
}

// Env is what expressions may refer to.
type Env struct {
	// Exports is what the program exports.
	Exports Exports
	// TargetLabels are added by the scrape to every series (job, instance,
	// and the Kubernetes labels the Prometheus Operator attaches).
	TargetLabels []string
	// Builtin are series Prometheus makes itself (up, ALERTS), with the
	// labels they carry besides TargetLabels.
	Builtin map[string][]string
}

// Check parses expr and checks it against the environment. It returns the
// metric names the expression uses, sorted, and every problem found.
func (e Env) Check(expr string) ([]string, error) {
	return e.run(expr, "")
}

// CheckLabel is Check, and label must be a label of the result (Grafana's
// label_values(selector, label)).
func (e Env) CheckLabel(selector, label string) ([]string, error) {
	return e.run(selector, label)
}

func (e Env) run(expr, label string) ([]string, error) {
	node, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	c := &checker{env: e, used: map[string]bool{}}
	have, _ := c.labels(node)
	if label != "" && !have[label] {
		c.bad("label %q is not a label of %s (labels: %s)", label, expr, list(have))
	}
	return slices.Sorted(maps.Keys(c.used)), errors.Join(c.errs...)
}

type set = map[string]bool

type checker struct {
	env  Env
	used map[string]bool
	errs []error
}

func (c *checker) bad(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func list(s set) string {
	return strings.Join(slices.Sorted(maps.Keys(s)), ", ")
}

// labels returns the label names the node's result series carry, and
// whether it is a vector (or range vector) at all; it records problems on
// the way down.
func (c *checker) labels(n parser.Node) (set, bool) {
	switch n := n.(type) {
	case *parser.VectorSelector:
		return c.selector(n)
	case *parser.MatrixSelector:
		return c.labels(n.VectorSelector)
	case *parser.SubqueryExpr:
		return c.labels(n.Expr)
	case *parser.ParenExpr:
		return c.labels(n.Expr)
	case *parser.UnaryExpr:
		return c.labels(n.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return set{}, false
	case *parser.Call:
		return c.call(n)
	case *parser.AggregateExpr:
		return c.aggregate(n)
	case *parser.BinaryExpr:
		return c.binary(n)
	default:
		c.bad("unsupported expression %T: %s", n, n)
		return set{}, false
	}
}

func (c *checker) selector(vs *parser.VectorSelector) (set, bool) {
	name := vs.Name
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			name = m.Value
		}
	}
	if name == "" {
		c.bad("selector %s has no metric name", vs)
		return set{}, true
	}
	c.used[name] = true
	have := set{}
	for _, l := range c.env.TargetLabels {
		have[l] = true
	}
	if m, ok := c.env.Exports[name]; ok {
		maps.Copy(have, m.Labels)
	} else if extra, ok := c.env.Builtin[name]; ok {
		for _, l := range extra {
			have[l] = true
		}
	} else {
		c.bad("metric %s is not exported", name)
		return have, true
	}
	for _, m := range vs.LabelMatchers {
		if m.Name != model.MetricNameLabel && !have[m.Name] {
			c.bad("%s: label %q is not a label of %s (labels: %s)", vs, m.Name, name, list(have))
		}
	}
	return have, true
}

// metricType is the declared type of the metric a range function reads.
func (c *checker) metricType(arg parser.Expr) (string, string) {
	ms, ok := arg.(*parser.MatrixSelector)
	if !ok {
		return "", ""
	}
	vs := ms.VectorSelector.(*parser.VectorSelector)
	name := vs.Name
	if m, ok := c.env.Exports[name]; ok {
		return name, m.Type
	}
	return name, ""
}

var (
	counterFuncs = []string{"rate", "irate", "increase", "resets"}
	gaugeFuncs   = []string{"deriv", "delta", "idelta", "predict_linear"}
)

func (c *checker) call(call *parser.Call) (set, bool) {
	var args []set
	var vector []bool
	for _, a := range call.Args {
		l, v := c.labels(a)
		args = append(args, l)
		vector = append(vector, v)
	}
	fn := call.Func.Name
	switch {
	case slices.Contains(counterFuncs, fn):
		if name, typ := c.metricType(call.Args[0]); typ != "" && typ != "counter" {
			c.bad("%s: %s() of %s, a %s (want a counter)", call, fn, name, typ)
		}
	case slices.Contains(gaugeFuncs, fn):
		if name, typ := c.metricType(call.Args[0]); typ != "" && typ != "gauge" && typ != "untyped" {
			c.bad("%s: %s() of %s, a %s (want a gauge)", call, fn, name, typ)
		}
	}
	switch fn {
	case "histogram_quantile":
		in := args[1]
		if !in["le"] {
			c.bad("%s: histogram_quantile() of series without an le label (want _bucket series; labels: %s)", call, list(in))
		}
		out := maps.Clone(in)
		delete(out, "le")
		return out, true
	case "label_replace", "label_join":
		out := maps.Clone(args[0])
		var srcs []parser.Expr
		if fn == "label_replace" {
			srcs = call.Args[3:4]
		} else {
			srcs = call.Args[3:]
		}
		for _, s := range srcs {
			if l := stringArg(s); l != "" && !out[l] {
				c.bad("%s: source label %q is not a label of its argument (labels: %s)", call, l, list(out))
			}
		}
		out[stringArg(call.Args[1])] = true
		return out, true
	case "absent", "absent_over_time", "vector", "time", "scalar":
		return set{}, fn != "time" && fn != "scalar"
	}
	for i, v := range vector {
		if v {
			return args[i], call.Type() == parser.ValueTypeVector
		}
	}
	return set{}, call.Type() == parser.ValueTypeVector
}

func stringArg(e parser.Expr) string {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			break
		}
		e = p.Expr
	}
	if s, ok := e.(*parser.StringLiteral); ok {
		return s.Val
	}
	return ""
}

func (c *checker) aggregate(a *parser.AggregateExpr) (set, bool) {
	in, _ := c.labels(a.Expr)
	if a.Param != nil {
		c.labels(a.Param)
	}
	if a.Without {
		out := maps.Clone(in)
		for _, g := range a.Grouping {
			delete(out, g)
		}
		return out, true
	}
	out := set{}
	for _, g := range a.Grouping {
		if !in[g] {
			c.bad("%s: by (%s): label %q is not a label of the aggregated series (labels: %s)", a, strings.Join(a.Grouping, ", "), g, list(in))
		}
		out[g] = true
	}
	switch a.Op {
	case parser.TOPK, parser.BOTTOMK, parser.LIMITK, parser.LIMIT_RATIO:
		return in, true
	case parser.COUNT_VALUES:
		out[stringArg(a.Param)] = true
	}
	return out, true
}

func (c *checker) binary(b *parser.BinaryExpr) (set, bool) {
	l, lv := c.labels(b.LHS)
	r, rv := c.labels(b.RHS)
	switch {
	case lv && !rv:
		return l, true
	case rv && !lv:
		return r, true
	case !lv && !rv:
		return set{}, false
	}
	vm := b.VectorMatching
	if vm == nil {
		return l, true
	}
	for _, m := range vm.MatchingLabels {
		switch {
		case vm.On && (!l[m] || !r[m]):
			c.bad("%s: on (%s): label %q is not on both sides (left: %s; right: %s)", b, strings.Join(vm.MatchingLabels, ", "), m, list(l), list(r))
		case !vm.On && !l[m] && !r[m]:
			c.bad("%s: ignoring (%s): label %q is on neither side", b, strings.Join(vm.MatchingLabels, ", "), m)
		}
	}
	one := r
	if vm.Card == parser.CardOneToMany {
		one = l
	}
	for _, inc := range vm.Include {
		if !one[inc] {
			c.bad("%s: group_left/group_right (%s): label %q is not on the one side (labels: %s)", b, strings.Join(vm.Include, ", "), inc, list(one))
		}
	}
	switch {
	case b.Op == parser.LAND || b.Op == parser.LUNLESS:
		return l, true
	case b.Op == parser.LOR:
		out := maps.Clone(l)
		maps.Copy(out, r)
		return out, true
	case vm.Card == parser.CardManyToOne, vm.Card == parser.CardOneToMany:
		out := maps.Clone(l)
		if vm.Card == parser.CardOneToMany {
			out = maps.Clone(r)
		}
		for _, inc := range vm.Include {
			out[inc] = true
		}
		return out, true
	case vm.On:
		out := set{}
		for _, m := range vm.MatchingLabels {
			out[m] = true
		}
		return out, true
	default:
		out := maps.Clone(l)
		for _, m := range vm.MatchingLabels {
			delete(out, m)
		}
		return out, true
	}
}
