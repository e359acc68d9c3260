package kube

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// External lists what the manifests use but do not create, e.g. the Secret
// the operator creates by hand, with its keys.
type External struct {
	Secrets         map[string][]string // name -> keys
	ConfigMaps      map[string][]string // name -> keys
	Claims          []string
	ServiceAccounts []string
}

// Container names the portbridge container in every workload.
const Container = "portbridge"

// secretEnv are the variables portbridge must get from a Secret, never as a
// literal value.
var secretEnv = []string{"PORTBRIDGE_SERVER_TOKEN", "PORTBRIDGE_BACKSTAGE_TOKEN", "PORTBRIDGE_PORT_CLIENT_ID", "PORTBRIDGE_PORT_CLIENT_SECRET"}

// workload is a pod template with where it came from.
type workload struct {
	obj    Object
	labels map[string]string
	spec   *corev1.PodSpec
}

// index holds what the objects define, by name.
type index struct {
	configMaps map[string][]string
	secrets    map[string][]string
	claims     map[string]bool
	accounts   map[string]bool
	workloads  []workload
	services   []Object
	monitoring []Object // ServiceMonitors, PodMonitors, PrometheusRules
}

func newIndex(objs []Object, ext External) (*index, []error) {
	ix := &index{configMaps: map[string][]string{}, secrets: map[string][]string{}, claims: map[string]bool{}, accounts: map[string]bool{"default": true}}
	for n, k := range ext.ConfigMaps {
		ix.configMaps[n] = k
	}
	for n, k := range ext.Secrets {
		ix.secrets[n] = k
	}
	for _, n := range ext.Claims {
		ix.claims[n] = true
	}
	for _, n := range ext.ServiceAccounts {
		ix.accounts[n] = true
	}
	var errs []error
	seen := map[string]bool{}
	for _, o := range objs {
		key := o.Kind + "/" + o.Name
		if seen[key] {
			errs = append(errs, fmt.Errorf("%s: defined twice", o))
		}
		seen[key] = true
		switch v := o.Obj.(type) {
		case *corev1.ConfigMap:
			ix.configMaps[v.Name] = append(keys(v.Data), keys(v.BinaryData)...)
		case *corev1.Secret:
			ix.secrets[v.Name] = append(keys(v.Data), keys(v.StringData)...)
		case *corev1.PersistentVolumeClaim:
			ix.claims[v.Name] = true
		case *corev1.ServiceAccount:
			ix.accounts[v.Name] = true
		case *corev1.Service:
			ix.services = append(ix.services, o)
		case *appsv1.Deployment:
			ix.workloads = append(ix.workloads, workload{o, v.Spec.Template.Labels, &v.Spec.Template.Spec})
			// The API server's own rule (apps validation): a Recreate
			// Deployment must not carry rollingUpdate, which a values file
			// merged over one with a RollingUpdate strategy easily leaves.
			if v.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType && v.Spec.Strategy.RollingUpdate != nil {
				errs = append(errs, fmt.Errorf("%s: spec.strategy.rollingUpdate may not be specified when strategy type is Recreate", o))
			}
			sel := v.Spec.Selector
			if sel == nil || len(sel.MatchLabels) == 0 {
				errs = append(errs, fmt.Errorf("%s: spec.selector.matchLabels is empty", o))
			} else if !labels.SelectorFromSet(sel.MatchLabels).Matches(labels.Set(v.Spec.Template.Labels)) {
				errs = append(errs, fmt.Errorf("%s: selector %v does not match the pod template labels %v", o, sel.MatchLabels, v.Spec.Template.Labels))
			}
		case *corev1.Pod:
			ix.workloads = append(ix.workloads, workload{o, v.Labels, &v.Spec})
		case *monitoringv1.ServiceMonitor, *monitoringv1.PodMonitor, *monitoringv1.PrometheusRule:
			ix.monitoring = append(ix.monitoring, o)
		case *batchv1.CronJob:
			t := &v.Spec.JobTemplate.Spec.Template
			ix.workloads = append(ix.workloads, workload{o, t.Labels, &t.Spec})
		}
	}
	return ix, errs
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Check cross-checks the objects: every reference resolves, probes use
// declared ports, Services select a pod, ServiceMonitors and PodMonitors
// select a Service or pod with the port they scrape, PrometheusRules are well
// formed, and every portbridge container keeps its required settings. It
// returns every problem found.
func Check(objs []Object, ext External) error {
	return check(objs, ext, true)
}

// CheckRefs is Check for manifests without a portbridge container (for
// example a Backstage that talks to a separate portbridge Deployment): only
// references, ports and Services are checked.
func CheckRefs(objs []Object, ext External) error {
	return check(objs, ext, false)
}

func check(objs []Object, ext External, wantPortbridge bool) error {
	ix, errs := newIndex(objs, ext)
	found := false
	for _, w := range ix.workloads {
		errs = append(errs, ix.checkPod(w)...)
		for i := range w.spec.Containers {
			if w.spec.Containers[i].Name == Container {
				found = true
				errs = append(errs, checkPortbridge(w, &w.spec.Containers[i])...)
			}
		}
	}
	if wantPortbridge && !found {
		errs = append(errs, fmt.Errorf("no workload has a %q container (objects: %s)", Container, Kinds(objs)))
	}
	for _, s := range ix.services {
		errs = append(errs, ix.checkService(s)...)
	}
	for _, o := range ix.monitoring {
		switch v := o.Obj.(type) {
		case *monitoringv1.ServiceMonitor:
			errs = append(errs, ix.checkServiceMonitor(o, v)...)
		case *monitoringv1.PodMonitor:
			errs = append(errs, ix.checkPodMonitor(o, v)...)
		case *monitoringv1.PrometheusRule:
			errs = append(errs, checkPrometheusRule(o, v)...)
		}
	}
	return errors.Join(errs...)
}

func (ix *index) checkPod(w workload) []error {
	var errs []error
	bad := reporter(w.obj, &errs)
	if !ix.accounts[w.spec.ServiceAccountName] && w.spec.ServiceAccountName != "" {
		bad("serviceAccountName %q is not defined", w.spec.ServiceAccountName)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range w.spec.Volumes {
		if _, dup := volumes[v.Name]; dup {
			bad("volume %q is defined twice", v.Name)
		}
		volumes[v.Name] = v
		switch {
		case v.ConfigMap != nil:
			ix.checkKeys(bad, "ConfigMap", ix.configMaps, v.ConfigMap.Name, itemKeys(v.ConfigMap.Items), v.ConfigMap.Optional, "volume "+v.Name)
		case v.Secret != nil:
			ix.checkKeys(bad, "Secret", ix.secrets, v.Secret.SecretName, itemKeys(v.Secret.Items), v.Secret.Optional, "volume "+v.Name)
		case v.PersistentVolumeClaim != nil:
			if !ix.claims[v.PersistentVolumeClaim.ClaimName] {
				bad("volume %q: PersistentVolumeClaim %q is not defined", v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	used := map[string]bool{}
	for _, c := range slices.Concat(w.spec.InitContainers, w.spec.Containers) {
		where := "container " + c.Name
		if c.Name == "" || c.Image == "" {
			bad("a container lacks a name or an image (name %q, image %q)", c.Name, c.Image)
		}
		for _, m := range c.VolumeMounts {
			used[m.Name] = true
			if _, ok := volumes[m.Name]; !ok {
				bad("%s: volumeMount %q at %s has no volume", where, m.Name, m.MountPath)
			}
		}
		for _, e := range c.EnvFrom {
			if r := e.ConfigMapRef; r != nil {
				ix.checkKeys(bad, "ConfigMap", ix.configMaps, r.Name, nil, r.Optional, where+" envFrom")
			}
			if r := e.SecretRef; r != nil {
				ix.checkKeys(bad, "Secret", ix.secrets, r.Name, nil, r.Optional, where+" envFrom")
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				ix.checkKeys(bad, "Secret", ix.secrets, r.Name, []string{r.Key}, r.Optional, where+" env "+e.Name)
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				ix.checkKeys(bad, "ConfigMap", ix.configMaps, r.Name, []string{r.Key}, r.Optional, where+" env "+e.Name)
			}
		}
		ports := namedPorts(c.Ports)
		for probeName, p := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe} {
			if p == nil || p.HTTPGet == nil {
				continue
			}
			if !portDeclared(p.HTTPGet.Port, ports, c.Ports) {
				bad("%s: %s port %s is not a port of the container", where, probeName, p.HTTPGet.Port.String())
			}
		}
	}
	for name := range volumes {
		if !used[name] {
			bad("volume %q is mounted by no container", name)
		}
	}
	return errs
}

func portDeclared(p intstr.IntOrString, named map[string]int32, all []corev1.ContainerPort) bool {
	if p.Type == intstr.String {
		_, ok := named[p.StrVal]
		return ok
	}
	return slices.ContainsFunc(all, func(cp corev1.ContainerPort) bool { return cp.ContainerPort == p.IntVal })
}

func itemKeys(items []corev1.KeyToPath) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.Key)
	}
	return out
}

func (ix *index) checkKeys(bad func(string, ...any), kind string, defined map[string][]string, name string, want []string, optional *bool, where string) {
	if optional != nil && *optional {
		return
	}
	have, ok := defined[name]
	if !ok {
		bad("%s: %s %q is not defined", where, kind, name)
		return
	}
	for _, k := range want {
		if !slices.Contains(have, k) {
			bad("%s: %s %q has no key %q (keys: %s)", where, kind, name, k, strings.Join(have, ", "))
		}
	}
}

func (ix *index) checkService(s Object) []error {
	svc := s.Obj.(*corev1.Service)
	if len(svc.Spec.Selector) == 0 {
		return []error{fmt.Errorf("%s: no selector", s)}
	}
	for _, w := range ix.workloads {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.labels)) {
			continue
		}
		var errs []error
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.Type != intstr.String {
				continue
			}
			declared := slices.ContainsFunc(w.spec.Containers, func(c corev1.Container) bool {
				return slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.TargetPort.StrVal })
			})
			if !declared {
				errs = append(errs, fmt.Errorf("%s: targetPort %q is not a port of %s", s, p.TargetPort.StrVal, w.obj))
			}
		}
		return errs
	}
	return []error{fmt.Errorf("%s: selector %v matches no pod template", s, svc.Spec.Selector)}
}

// checkPortbridge holds the portbridge container to what deploy/README.md
// promises: non-root, read-only root filesystem, no privilege escalation,
// probes on /healthz and /readyz, resources set, secrets from a Secret, the
// config file and the state directory mounted.
func checkPortbridge(w workload, c *corev1.Container) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: container %s: %s", w.obj, c.Name, fmt.Sprintf(format, args...)))
	}
	sc, psc := c.SecurityContext, w.spec.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		bad("runAsNonRoot is not true")
	}
	for _, uid := range []*int64{sc.RunAsUser, psc.RunAsUser} {
		if uid != nil && *uid == 0 {
			bad("runAsUser is 0")
		}
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		bad("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		bad("allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		bad("privileged")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		bad("capabilities do not drop ALL")
	}
	for name, p := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{"livenessProbe": {c.LivenessProbe, "/healthz"}, "readinessProbe": {c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path {
			bad("%s is not an httpGet of %s", name, p.path)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		bad("resources.requests lack cpu or memory")
	}
	if c.Resources.Limits.Memory().IsZero() {
		bad("resources.limits lack memory")
	} else if c.Resources.Limits.Memory().Cmp(*c.Resources.Requests.Memory()) < 0 {
		bad("memory limit is below the request")
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	for _, name := range secretEnv {
		e, ok := env[name]
		if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.Value != "" {
			bad("env %s must come from a secretKeyRef", name)
		}
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	if _, ok := mounts["/var/lib/portbridge"]; !ok {
		bad("nothing is mounted at the state directory /var/lib/portbridge (the root filesystem is read-only)")
	}
	args := slices.Concat(c.Command, c.Args)
	i := slices.Index(args, "--config")
	if len(args) == 0 || args[0] != "serve" || i < 0 || i+1 >= len(args) {
		bad("args %q are not `serve --config FILE`", args)
	} else if m, ok := mounts[path.Dir(args[i+1])]; !ok || !m.ReadOnly {
		bad("config file %s is not on a read-only mount", args[i+1])
	}
	return errs
}

// ConfigFiles returns, for every portbridge container, the config file its
// args name, read from the ConfigMap mounted at that directory: source ->
// content. Missing ones are errors.
func ConfigFiles(objs []Object) (map[string]string, error) {
	cms := map[string]*corev1.ConfigMap{}
	ix, _ := newIndex(objs, External{})
	for _, o := range objs {
		if cm, ok := o.Obj.(*corev1.ConfigMap); ok {
			cms[cm.Name] = cm
		}
	}
	out := map[string]string{}
	var errs []error
	for _, w := range ix.workloads {
		for _, c := range w.spec.Containers {
			if c.Name != Container {
				continue
			}
			args := slices.Concat(c.Command, c.Args)
			i := slices.Index(args, "--config")
			if i < 0 || i+1 >= len(args) {
				errs = append(errs, fmt.Errorf("%s: no --config argument", w.obj))
				continue
			}
			file := args[i+1]
			content, err := fileFromConfigMap(w, c, cms, file)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", w.obj, err))
				continue
			}
			out[w.obj.Source+":"+file] = content
		}
	}
	return out, errors.Join(errs...)
}

func fileFromConfigMap(w workload, c corev1.Container, cms map[string]*corev1.ConfigMap, file string) (string, error) {
	for _, m := range c.VolumeMounts {
		if m.MountPath != path.Dir(file) {
			continue
		}
		for _, v := range w.spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := cms[v.ConfigMap.Name]
			if !ok {
				return "", fmt.Errorf("ConfigMap %q for %s is not among the objects", v.ConfigMap.Name, file)
			}
			content, ok := cm.Data[path.Base(file)]
			if !ok {
				return "", fmt.Errorf("ConfigMap %q has no key %q", cm.Name, path.Base(file))
			}
			return content, nil
		}
	}
	return "", fmt.Errorf("no ConfigMap volume is mounted at %s", path.Dir(file))
}
