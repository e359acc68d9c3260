package kube

import (
	"fmt"
	"slices"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// checkServiceMonitor: the ServiceMonitor selects at least one Service of the
// manifests by its labels, and every endpoint names a port of each selected
// Service; durations parse and the timeout fits in the interval.
func (ix *index) checkServiceMonitor(o Object, sm *monitoringv1.ServiceMonitor) []error {
	var errs []error
	bad := reporter(o, &errs)
	sel, ok := selector(bad, sm.Spec.Selector)
	if !ok {
		return errs
	}
	if len(sm.Spec.Endpoints) == 0 {
		bad("no endpoints")
	}
	matched := matching(sel, ix.services, func(o Object) map[string]string { return o.Obj.(*corev1.Service).Labels })
	if len(matched) == 0 {
		bad("selector %s matches no Service (a ServiceMonitor selects Services by their own labels)", sel)
	}
	for i, ep := range sm.Spec.Endpoints {
		where := fmt.Sprintf("endpoints[%d]", i)
		checkScrape(bad, where, ep.Path, ep.Interval, ep.ScrapeTimeout)
		switch {
		case ep.Port != "":
			for _, o := range matched {
				svc := o.Obj.(*corev1.Service)
				if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					bad("%s: port %q is not a port name of Service %s", where, ep.Port, svc.Name)
				}
			}
		case ep.TargetPort == nil:
			bad("%s: neither port nor targetPort", where)
		}
	}
	return errs
}

// checkPodMonitor: the PodMonitor selects at least one pod template of the
// manifests, and every endpoint names a container port of each selected pod.
func (ix *index) checkPodMonitor(o Object, pm *monitoringv1.PodMonitor) []error {
	var errs []error
	bad := reporter(o, &errs)
	sel, ok := selector(bad, pm.Spec.Selector)
	if !ok {
		return errs
	}
	if len(pm.Spec.PodMetricsEndpoints) == 0 {
		bad("no podMetricsEndpoints")
	}
	matched := matching(sel, ix.workloads, func(w workload) map[string]string { return w.labels })
	if len(matched) == 0 {
		bad("selector %s matches no pod template", sel)
	}
	for i, ep := range pm.Spec.PodMetricsEndpoints {
		where := fmt.Sprintf("podMetricsEndpoints[%d]", i)
		checkScrape(bad, where, ep.Path, ep.Interval, ep.ScrapeTimeout)
		switch {
		case ep.Port != nil:
			for _, w := range matched {
				if !podHasPort(w.spec, intstr.FromString(*ep.Port)) {
					bad("%s: port %q is not a container port name of %s", where, *ep.Port, w.obj)
				}
			}
		case ep.PortNumber != nil:
			for _, w := range matched {
				if !podHasPort(w.spec, intstr.FromInt32(*ep.PortNumber)) {
					bad("%s: portNumber %d is not a container port of %s", where, *ep.PortNumber, w.obj)
				}
			}
		default:
			bad("%s: neither port nor portNumber", where)
		}
	}
	return errs
}

// checkPrometheusRule: groups have unique names; every rule is either an
// alert or a recording rule with an expression; alert names are unique in
// the object; durations parse. What the expressions mean is checked by the
// promql package.
func checkPrometheusRule(o Object, pr *monitoringv1.PrometheusRule) []error {
	var errs []error
	bad := reporter(o, &errs)
	if len(pr.Spec.Groups) == 0 {
		bad("no rule groups")
	}
	groups := map[string]bool{}
	alerts := map[string]bool{}
	for _, g := range pr.Spec.Groups {
		if g.Name == "" || groups[g.Name] {
			bad("group name %q is empty or used twice", g.Name)
		}
		groups[g.Name] = true
		if g.Interval != nil {
			checkDuration(bad, "group "+g.Name+" interval", string(*g.Interval))
		}
		if len(g.Rules) == 0 {
			bad("group %s has no rules", g.Name)
		}
		for i, r := range g.Rules {
			where := fmt.Sprintf("group %s rule %d", g.Name, i)
			if r.Alert != "" {
				where = fmt.Sprintf("group %s alert %s", g.Name, r.Alert)
			}
			switch {
			case (r.Alert == "") == (r.Record == ""):
				bad("%s: set exactly one of alert and record", where)
			case r.Alert != "" && alerts[r.Alert]:
				bad("%s: alert name used twice", where)
			}
			alerts[r.Alert] = r.Alert != ""
			if r.Expr.Type != intstr.String || strings.TrimSpace(r.Expr.StrVal) == "" {
				bad("%s: expr is not a non-empty string", where)
			}
			if r.For != nil {
				checkDuration(bad, where+" for", string(*r.For))
			}
			if r.Record != "" && len(r.Annotations) > 0 {
				bad("%s: a recording rule has no annotations", where)
			}
		}
	}
	return errs
}

// matching returns the items whose labels sel matches.
func matching[T any](sel labels.Selector, items []T, labelsOf func(T) map[string]string) []T {
	var out []T
	for _, it := range items {
		if sel.Matches(labels.Set(labelsOf(it))) {
			out = append(out, it)
		}
	}
	return out
}

// reporter returns a function that records a problem of o in errs.
func reporter(o fmt.Stringer, errs *[]error) func(string, ...any) {
	return func(format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("%s: %s", o, fmt.Sprintf(format, args...)))
	}
}

func selector(bad func(string, ...any), ls metav1.LabelSelector) (labels.Selector, bool) {
	if len(ls.MatchLabels) == 0 && len(ls.MatchExpressions) == 0 {
		bad("empty selector (selects everything)")
		return nil, false
	}
	sel, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil {
		bad("selector: %v", err)
		return nil, false
	}
	return sel, true
}

func podHasPort(spec *corev1.PodSpec, p intstr.IntOrString) bool {
	for _, c := range spec.Containers {
		if portDeclared(p, namedPorts(c.Ports), c.Ports) {
			return true
		}
	}
	return false
}

func namedPorts(ports []corev1.ContainerPort) map[string]int32 {
	out := map[string]int32{}
	for _, p := range ports {
		if p.Name != "" {
			out[p.Name] = p.ContainerPort
		}
	}
	return out
}

// checkScrape checks a scrape endpoint's path and durations.
func checkScrape(bad func(string, ...any), where, path string, interval, timeout monitoringv1.Duration) {
	if path != "" && !strings.HasPrefix(path, "/") {
		bad("%s: path %q does not start with /", where, path)
	}
	iv := checkDuration(bad, where+" interval", string(interval))
	to := checkDuration(bad, where+" scrapeTimeout", string(timeout))
	if iv > 0 && to > iv {
		bad("%s: scrapeTimeout %s is longer than the interval %s", where, timeout, interval)
	}
}

// checkDuration parses a Prometheus duration ("30s", "1h30m"); "" is 0.
func checkDuration(bad func(string, ...any), where, s string) model.Duration {
	if s == "" {
		return 0
	}
	d, err := model.ParseDuration(s)
	if err != nil {
		bad("%s: %v", where, err)
	}
	return d
}
