// Tests of everything under deploy/: the Helm chart, the values for the
// official Backstage chart and the kustomize manifests are rendered with the
// real tools' Go packages and every object is decoded strictly into the
// official Kubernetes API types, then cross-checked (package kube). The
// portbridge config files they carry are loaded with the product's own config
// loader.
package deploy_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/portbridge/portbridge/deploy/internal/kube"
	"github.com/portbridge/portbridge/deploy/internal/render"
)

// secretKeys are the keys of the Secret the operator creates (deploy/README.md).
var secretKeys = []string{"server-token", "backstage-token", "port-client-id", "port-client-secret"}

func ext(secret string) kube.External {
	return kube.External{Secrets: map[string][]string{secret: secretKeys}}
}

// validate decodes a rendered stream strictly, cross-checks it, and returns
// the objects.
func validate(t *testing.T, source, manifest string, external kube.External) []kube.Object {
	t.Helper()
	objs, err := kube.Decode(source, []byte(manifest))
	if err != nil {
		t.Fatalf("strict decoding:\n%v\n--- manifest ---\n%s", err, manifest)
	}
	if err := kube.Check(objs, external); err != nil {
		t.Fatalf("checks:\n%v\n--- manifest ---\n%s", err, manifest)
	}
	return objs
}

func find[T any](t *testing.T, objs []kube.Object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && (name == "" || o.Name == name) {
			if v, ok := o.Obj.(T); ok {
				return v
			}
		}
	}
	t.Fatalf("no %s %q among %s", kind, name, kube.Kinds(objs))
	var zero T
	return zero
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func values(t *testing.T, doc string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

const chartDir = "helm/portbridge"

func TestHelmChart(t *testing.T) {
	t.Parallel()
	base := "image: {repository: registry.example.com/platform/portbridge}\nexistingSecret: portbridge\n"
	for _, tc := range []struct {
		name   string
		values string
		ext    kube.External
		check  func(t *testing.T, objs []kube.Object)
	}{
		{"defaults", base, ext("portbridge"), func(t *testing.T, objs []kube.Object) {
			d := find[*appsv1.Deployment](t, objs, "Deployment", "pb-portbridge")
			if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
				t.Errorf("replicas %d strategy %s, want 1 and Recreate", *d.Spec.Replicas, d.Spec.Strategy.Type)
			}
			c := container(t, d.Spec.Template.Spec, "portbridge")
			if c.Image != "registry.example.com/platform/portbridge:0.1.0" {
				t.Errorf("image %s", c.Image)
			}
			if v := d.Spec.Template.Spec.Volumes[1]; v.Name != "state" || v.EmptyDir == nil {
				t.Errorf("state volume %+v, want an emptyDir", v)
			}
			if slices.ContainsFunc(objs, func(o kube.Object) bool { return o.Kind == "PersistentVolumeClaim" }) {
				t.Error("a PVC is rendered with persistence disabled")
			}
		}},
		{"persistence", base + "persistence: {enabled: true, storageClassName: fast, size: 2Gi}\n", ext("portbridge"), func(t *testing.T, objs []kube.Object) {
			pvc := find[*corev1.PersistentVolumeClaim](t, objs, "PersistentVolumeClaim", "pb-portbridge-state")
			if *pvc.Spec.StorageClassName != "fast" || pvc.Spec.Resources.Requests.Storage().String() != "2Gi" {
				t.Errorf("pvc %+v", pvc.Spec)
			}
		}},
		{"existing claim", base + "persistence: {enabled: true, existingClaim: mine}\n",
			kube.External{Secrets: ext("portbridge").Secrets, Claims: []string{"mine"}}, func(t *testing.T, objs []kube.Object) {
				d := find[*appsv1.Deployment](t, objs, "Deployment", "")
				if v := d.Spec.Template.Spec.Volumes[1]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "mine" {
					t.Errorf("state volume %+v", v)
				}
			}},
		{"own mapping, digest, extra env, other secret keys",
			"image: {repository: r.example/pb, digest: 'sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'}\n" +
				"existingSecret: creds\nsecretKeys: {portClientSecret: secret}\n" +
				"portAppConfig: |\n  resources:\n    - kind: component\n" +
				"extraEnv: [{name: HTTPS_PROXY, value: 'http://proxy:3128'}]\n",
			kube.External{Secrets: map[string][]string{"creds": {"server-token", "backstage-token", "port-client-id", "secret"}}},
			func(t *testing.T, objs []kube.Object) {
				cm := find[*corev1.ConfigMap](t, objs, "ConfigMap", "")
				if !strings.Contains(cm.Data["config.yaml"], "file: /etc/portbridge/port-app-config.yaml") || cm.Data["port-app-config.yaml"] == "" {
					t.Errorf("config map %v", cm.Data)
				}
				c := container(t, find[*appsv1.Deployment](t, objs, "Deployment", "").Spec.Template.Spec, "portbridge")
				if !strings.HasSuffix(c.Image, "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") {
					t.Errorf("image %s", c.Image)
				}
			}},
		{"service account by name", base + "serviceAccount: {create: false, name: existing}\nfullnameOverride: bridge\n",
			kube.External{Secrets: ext("portbridge").Secrets, ServiceAccounts: []string{"existing"}}, func(t *testing.T, objs []kube.Object) {
				find[*corev1.Service](t, objs, "Service", "bridge")
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vals := values(t, tc.values)
			if err := render.Lint(chartDir, vals); err != nil {
				t.Fatal(err)
			}
			manifest, err := render.Helm(context.Background(), chartDir, "pb", "backstage", vals)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, validate(t, "helm "+tc.name, manifest, tc.ext))
		})
	}
}

func TestHelmChartRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, values, want string }{
		{"no image", "existingSecret: s\n", "image.repository is required"},
		{"no secret", "image: {repository: r.example/pb}\n", "existingSecret is required"},
		{"misspelled resources", "image: {repository: r.example/pb}\nexistingSecret: s\nresources: {requets: {cpu: 1}}\n", "unknown field"},
		{"bad probe field", "image: {repository: r.example/pb}\nexistingSecret: s\nlivenessProbe: {httpGet: {path: /healthz, port: http}, periodSecond: 3}\n", "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			manifest, err := render.Helm(context.Background(), chartDir, "pb", "default", values(t, tc.values))
			if err == nil {
				_, err = kube.Decode(tc.name, []byte(manifest))
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// overlay writes a kustomization in a new directory with the given
// resources and components (paths relative to deploy/) and extra lines, and
// returns the directory.
func overlay(t *testing.T, resources, components []string, extra string) string {
	t.Helper()
	dir := t.TempDir()
	// kustomize only accepts relative paths to other kustomizations.
	rel := func(ps []string) string {
		var out []string
		for _, p := range ps {
			a, err := filepath.Abs(p)
			if err != nil {
				t.Fatal(err)
			}
			r, err := filepath.Rel(dir, a)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		return "[" + strings.Join(out, ", ") + "]"
	}
	body := fmt.Sprintf("resources: %s\ncomponents: %s\n%s", rel(resources), rel(components), extra)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestKustomize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, dir string
		check     func(t *testing.T, objs []kube.Object)
	}{
		{"standalone", "kustomize/standalone", func(t *testing.T, objs []kube.Object) {
			d := find[*appsv1.Deployment](t, objs, "Deployment", "portbridge")
			if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
				t.Errorf("replicas %d strategy %s", *d.Spec.Replicas, d.Spec.Strategy.Type)
			}
		}},
		{"standalone overlay with image and persistent state", overlay(t, []string{"kustomize/standalone"}, []string{"kustomize/components/persistent-state"},
			"images: [{name: portbridge, newName: registry.example.com/platform/portbridge, newTag: v0.1.0}]\n"),
			func(t *testing.T, objs []kube.Object) {
				d := find[*appsv1.Deployment](t, objs, "Deployment", "portbridge")
				spec := d.Spec.Template.Spec
				if c := container(t, spec, "portbridge"); c.Image != "registry.example.com/platform/portbridge:v0.1.0" {
					t.Errorf("image %s", c.Image)
				}
				for _, v := range spec.Volumes {
					if v.Name == "state" && (v.EmptyDir != nil || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "portbridge-state") {
						t.Errorf("state volume %+v, want only the claim", v)
					}
				}
				find[*corev1.PersistentVolumeClaim](t, objs, "PersistentVolumeClaim", "portbridge-state")
			}},
		{"sidecar", "kustomize/sidecar", func(t *testing.T, objs []kube.Object) {
			d := find[*appsv1.Deployment](t, objs, "Deployment", "backstage")
			spec := d.Spec.Template.Spec
			bs := container(t, spec, "backstage-backend")
			if !slices.Contains(bs.Args, "/app/app-config.portbridge.yaml") || len(bs.Env) != 2 {
				t.Errorf("backstage container args %v env %v", bs.Args, bs.Env)
			}
			if c := container(t, spec, "portbridge"); c.Image != "registry.example.com/platform/portbridge:v0.1.0" {
				t.Errorf("image %s", c.Image)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			manifest, err := render.Kustomize(tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, validate(t, tc.name, manifest, ext("portbridge")))
		})
	}
}

const valuesFile = "helm/values-portbridge.yaml"

func loadValuesFile(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.UnmarshalStrict(b, &v); err != nil {
		t.Fatalf("%s: %v", valuesFile, err)
	}
	return v
}

// officialChart renders values through the real Backstage chart 2.8.2
// (render.BackstageChartPath), its values.schema.json enforced, as release
// "backstage" in namespace "backstage".
func officialChart(t *testing.T, v map[string]any) string {
	t.Helper()
	m, err := render.BackstageChart(context.Background(), render.BackstageChartPath, "backstage", "backstage", v)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// withImage is the values file with the one value it requires.
func withImage(t *testing.T) map[string]any {
	t.Helper()
	v := loadValuesFile(t)
	v["portbridge"].(map[string]any)["image"] = "registry.example.com/platform/portbridge:v0.1.0"
	return v
}

// writeValues writes a values file for render.ValuesFiles.
func writeValues(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// backstageConfigFiles returns the app-config files the Backstage container
// is started with, in --config order, each with its content when it comes
// from a ConfigMap in objs ("" for files inside the image).
func backstageConfigFiles(t *testing.T, objs []kube.Object, spec corev1.PodSpec) [][2]string {
	t.Helper()
	bs := container(t, spec, "backstage-backend")
	var out [][2]string
	for i, a := range bs.Args {
		if a != "--config" || i+1 >= len(bs.Args) {
			continue
		}
		file, content := bs.Args[i+1], ""
		for _, m := range bs.VolumeMounts {
			if m.MountPath != file {
				continue
			}
			for _, vol := range spec.Volumes {
				if vol.Name == m.Name && vol.ConfigMap != nil {
					content = find[*corev1.ConfigMap](t, objs, "ConfigMap", vol.ConfigMap.Name).Data[m.SubPath]
				}
			}
		}
		out = append(out, [2]string{file, content})
	}
	return out
}

// mergeBackstageConfig merges app-config documents the way Backstage does:
// later files win, objects merge key by key, lists and scalars are replaced.
func mergeBackstageConfig(t *testing.T, docs []string) map[string]any {
	t.Helper()
	var merge func(dst, src map[string]any)
	merge = func(dst, src map[string]any) {
		for k, sv := range src {
			sm, sok := sv.(map[string]any)
			dm, dok := dst[k].(map[string]any)
			if sok && dok {
				merge(dm, sm)
				continue
			}
			dst[k] = sv
		}
	}
	out := map[string]any{}
	for _, d := range docs {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatal(err)
		}
		merge(out, m)
	}
	return out
}

// externalAccessSubjects lists backend.auth.externalAccess[].options.subject.
func externalAccessSubjects(cfg map[string]any) []string {
	var out []string
	backend, _ := cfg["backend"].(map[string]any)
	auth, _ := backend["auth"].(map[string]any)
	list, _ := auth["externalAccess"].([]any)
	for _, e := range list {
		em, _ := e.(map[string]any)
		opts, _ := em["options"].(map[string]any)
		s, _ := opts["subject"].(string)
		out = append(out, s)
	}
	return out
}

// TestOfficialChartValues renders helm/values-portbridge.yaml through the
// official Backstage chart itself (2.8.2, with its Bitnami "common" library
// and values.schema.json) and checks what the chart makes of our values and of
// the chart keys operators commonly combine them with.
func TestOfficialChartValues(t *testing.T) {
	t.Parallel()
	// Each snippet, strictly, as the API type the chart pastes it into (the
	// chart's schema does not forbid unknown fields inside containers).
	bs := loadValuesFile(t)["backstage"].(map[string]any)
	for key, out := range map[string]any{
		"extraContainers":   &[]corev1.Container{},
		"extraVolumes":      &[]corev1.Volume{},
		"extraEnvVars":      &[]corev1.EnvVar{},
		"extraVolumeMounts": &[]corev1.VolumeMount{},
	} {
		if raw, ok := bs[key]; ok {
			if err := kube.DecodeInto(valuesFile+": backstage."+key, raw, out); err != nil {
				t.Error(err)
			}
		}
	}

	t.Run("rendered by the official chart", func(t *testing.T) {
		t.Parallel()
		objs := validate(t, "official chart", officialChart(t, withImage(t)), ext("portbridge"))
		d := find[*appsv1.Deployment](t, objs, "Deployment", "backstage")
		spec := d.Spec.Template.Spec
		c := container(t, spec, "portbridge")
		if c.Image != "registry.example.com/platform/portbridge:v0.1.0" || c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("image %s policy %s", c.Image, c.ImagePullPolicy)
		}
		if a := d.Spec.Template.Annotations["checksum/portbridge-config"]; len(a) != 64 {
			t.Errorf("config checksum annotation %q", a)
		}
		// Backstage keeps reading its own app-config.yaml, then ours.
		bs := container(t, spec, "backstage-backend")
		if want := []string{"--config", "app-config.yaml", "--config", "/app/app-config.portbridge.yaml"}; !slices.Equal(bs.Args, want) {
			t.Errorf("backstage args %q, want %q", bs.Args, want)
		}
		// Without args, our extraAppConfig would be the only config file
		// (Backstage reads app-config.yaml by default only without --config).
		v := withImage(t)
		delete(v["backstage"].(map[string]any), "args")
		objs = validate(t, "official chart without args", officialChart(t, v), ext("portbridge"))
		bs = container(t, find[*appsv1.Deployment](t, objs, "Deployment", "backstage").Spec.Template.Spec, "backstage-backend")
		if want := []string{"--config", "/app/app-config.portbridge.yaml"}; !slices.Equal(bs.Args, want) {
			t.Errorf("the chart without args: %q, want %q (has the chart changed?)", bs.Args, want)
		}
		// The default strategy: none rendered, Kubernetes' RollingUpdate.
		if d.Spec.Strategy.Type != "" {
			t.Errorf("strategy %+v rendered by default", d.Spec.Strategy)
		}
	})

	t.Run("schema enforced", func(t *testing.T) {
		t.Parallel()
		for name, edit := range map[string]func(bs map[string]any){
			"unknown key": func(bs map[string]any) { bs["extraContainer"] = bs["extraContainers"] },
			"wrong type":  func(bs map[string]any) { bs["extraEnvVarsSecrets"] = "portbridge" },
			"extraAppConfig": func(bs map[string]any) {
				bs["extraAppConfig"] = []any{map[string]any{"file": "x.yaml", "configMapRef": "x"}}
			},
			"annotation type": func(bs map[string]any) { bs["podAnnotations"] = map[string]any{"n": 1} },
		} {
			v := withImage(t)
			edit(v["backstage"].(map[string]any))
			_, err := render.BackstageChart(context.Background(), render.BackstageChartPath, "backstage", "backstage", v)
			if err == nil || !strings.Contains(err.Error(), "values don't meet the specifications of the schema") {
				t.Errorf("%s: err %v, want the chart's schema to reject it", name, err)
			}
		}
	})

	t.Run("image required", func(t *testing.T) {
		t.Parallel()
		_, err := render.BackstageChart(context.Background(), render.BackstageChartPath, "backstage", "backstage", loadValuesFile(t))
		if err == nil || !strings.Contains(err.Error(), "set portbridge.image") {
			t.Errorf("err %v, want the required-image message", err)
		}
	})

	// The persistent-state recipe of the values file's comment, merged like
	// `helm -f mine.yaml -f values-portbridge.yaml -f state.yaml` over an
	// operator's values that already choose a RollingUpdate strategy.
	t.Run("strategy: persistent state over a RollingUpdate", func(t *testing.T) {
		t.Parallel()
		mine := writeValues(t, "backstage:\n  strategy:\n    type: RollingUpdate\n    rollingUpdate: {maxSurge: 0, maxUnavailable: 1}\n")
		claim := kube.External{Secrets: ext("portbridge").Secrets, Claims: []string{"portbridge-state"}}
		for _, tc := range []struct {
			name, state string
			wantErr     string
		}{
			{"recipe", "backstage:\n  strategy: {type: Recreate, rollingUpdate: null}\n  extraVolumes:\n    - {name: portbridge-state, persistentVolumeClaim: {claimName: portbridge-state}}\n", ""},
			{"without rollingUpdate: null", "backstage:\n  strategy: {type: Recreate}\n  extraVolumes:\n    - {name: portbridge-state, persistentVolumeClaim: {claimName: portbridge-state}}\n",
				"rollingUpdate may not be specified when strategy type is Recreate"},
		} {
			v, err := render.ValuesFiles([]string{mine, valuesFile, writeValues(t, tc.state)}, "portbridge.image=r.example/pb:v1")
			if err != nil {
				t.Fatal(err)
			}
			manifest := officialChart(t, v)
			objs, err := kube.Decode(tc.name, []byte(manifest))
			if err != nil {
				t.Fatal(err)
			}
			err = kube.Check(objs, claim)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("%s: err %v, want %q", tc.name, err, tc.wantErr)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			d := find[*appsv1.Deployment](t, objs, "Deployment", "backstage")
			if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate != nil {
				t.Errorf("%s: strategy %+v, want Recreate alone", tc.name, d.Spec.Strategy)
			}
			for _, vol := range d.Spec.Template.Spec.Volumes {
				if vol.Name == "portbridge-state" && (vol.PersistentVolumeClaim == nil || vol.EmptyDir != nil) {
					t.Errorf("%s: state volume %+v", tc.name, vol)
				}
			}
		}
	})

	// appConfig makes the chart create its own ConfigMap and pass it as the
	// last --config file: it wins over app-config.portbridge.yaml, and a
	// list in it replaces ours (what the values file warns about).
	t.Run("appConfig", func(t *testing.T) {
		t.Parallel()
		other := map[string]any{"type": "static", "options": map[string]any{"token": "${OTHER_TOKEN}", "subject": "other"}}
		for _, tc := range []struct {
			name     string
			list     []any
			subjects []string
		}{
			{"own externalAccess list replaces ours", []any{other}, []string{"other"}},
			{"our entry copied into it", func() []any {
				ac := mergeBackstageConfig(t, []string{loadConfigMapFile(t, "app-config.portbridge.yaml")})
				ours := ac["backend"].(map[string]any)["auth"].(map[string]any)["externalAccess"].([]any)
				return append([]any{other}, ours...)
			}(), []string{"other", "portbridge"}},
		} {
			v := withImage(t)
			v["backstage"].(map[string]any)["appConfig"] = map[string]any{
				"app":     map[string]any{"baseUrl": "https://backstage.example.com"},
				"backend": map[string]any{"auth": map[string]any{"externalAccess": tc.list}},
			}
			objs := validate(t, "official chart with appConfig", officialChart(t, v), ext("portbridge"))
			find[*corev1.ConfigMap](t, objs, "ConfigMap", "backstage-app-config")
			spec := find[*appsv1.Deployment](t, objs, "Deployment", "backstage").Spec.Template.Spec
			files := backstageConfigFiles(t, objs, spec)
			var order, docs []string
			for _, f := range files {
				order = append(order, f[0])
				docs = append(docs, f[1])
			}
			if want := []string{"app-config.yaml", "/app/app-config.portbridge.yaml", "/app/app-config-from-configmap.yaml"}; !slices.Equal(order, want) {
				t.Fatalf("%s: config files %q, want %q", tc.name, order, want)
			}
			eff := mergeBackstageConfig(t, docs)
			if got := externalAccessSubjects(eff); !slices.Equal(got, tc.subjects) {
				t.Errorf("%s: effective externalAccess subjects %q, want %q", tc.name, got, tc.subjects)
			}
			if pb, _ := eff["portBridge"].(map[string]any); pb["sidecarUrl"] != "http://127.0.0.1:8080" {
				t.Errorf("%s: portBridge block lost: %v", tc.name, eff["portBridge"])
			}
		}
	})

	// extraEnvVarsSecrets / extraEnvVarsCM become envFrom on the Backstage
	// container only; the sidecar keeps exactly its own env, and the
	// references must exist like any other.
	t.Run("extraEnvVarsSecrets and extraEnvVarsCM", func(t *testing.T) {
		t.Parallel()
		v := withImage(t)
		b := v["backstage"].(map[string]any)
		b["extraEnvVarsSecrets"] = []any{"backstage-secrets"}
		b["extraEnvVarsCM"] = []any{"backstage-env"}
		manifest := officialChart(t, v)
		objs, err := kube.Decode("envFrom", []byte(manifest))
		if err != nil {
			t.Fatal(err)
		}
		if err := kube.Check(objs, ext("portbridge")); err == nil || !strings.Contains(err.Error(), `Secret "backstage-secrets" is not defined`) ||
			!strings.Contains(err.Error(), `ConfigMap "backstage-env" is not defined`) {
			t.Errorf("unresolved envFrom references: err %v", err)
		}
		full := ext("portbridge")
		full.Secrets["backstage-secrets"] = nil
		full.ConfigMaps = map[string][]string{"backstage-env": nil}
		objs = validate(t, "envFrom", manifest, full)
		spec := find[*appsv1.Deployment](t, objs, "Deployment", "backstage").Spec.Template.Spec
		bs, pb := container(t, spec, "backstage-backend"), container(t, spec, "portbridge")
		if len(bs.EnvFrom) != 2 || bs.EnvFrom[0].ConfigMapRef == nil || bs.EnvFrom[0].ConfigMapRef.Name != "backstage-env" ||
			bs.EnvFrom[1].SecretRef == nil || bs.EnvFrom[1].SecretRef.Name != "backstage-secrets" {
			t.Errorf("backstage envFrom %+v", bs.EnvFrom)
		}
		if len(pb.EnvFrom) != 0 {
			t.Errorf("portbridge container got envFrom %+v", pb.EnvFrom)
		}
		names := map[string]bool{}
		for _, e := range bs.Env {
			names[e.Name] = e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		}
		if !names["PORTBRIDGE_TOKEN"] || !names["PORTBRIDGE_BACKSTAGE_TOKEN"] {
			t.Errorf("backstage env %v lost our variables next to envFrom", bs.Env)
		}
	})
}

// loadConfigMapFile returns one file of the values file's portbridge
// ConfigMap (extraDeploy[0]).
func loadConfigMapFile(t *testing.T, key string) string {
	t.Helper()
	cm := loadValuesFile(t)["extraDeploy"].([]any)[0].(map[string]any)
	s, _ := cm["data"].(map[string]any)[key].(string)
	if s == "" {
		t.Fatalf("%s: extraDeploy[0].data has no %s", valuesFile, key)
	}
	return s
}

// sidecarManifests renders both sidecar variants.
func sidecarManifests(t *testing.T) map[string][]kube.Object {
	t.Helper()
	chart := officialChart(t, withImage(t))
	kust, err := render.Kustomize("kustomize/sidecar")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]kube.Object{}
	for name, m := range map[string]string{"official chart values": chart, "kustomize sidecar": kust} {
		objs, err := kube.Decode(name, []byte(m))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = objs
	}
	return out
}

// TestBackstageSide checks the Backstage half of both sidecar variants: the
// module's app-config block is mounted and passed with --config, every
// ${VAR} it uses is set on the Backstage container from the Secret, the
// module points at the sidecar's port, and both variants carry the same
// config files.
func TestBackstageSide(t *testing.T) {
	t.Parallel()
	files := map[string]map[string]string{}
	for name, objs := range sidecarManifests(t) {
		d := find[*appsv1.Deployment](t, objs, "Deployment", "backstage")
		spec := d.Spec.Template.Spec
		bs, pb := container(t, spec, "backstage-backend"), container(t, spec, "portbridge")
		var cm *corev1.ConfigMap
		for _, o := range objs {
			if c, ok := o.Obj.(*corev1.ConfigMap); ok && strings.HasPrefix(c.Name, "portbridge") {
				cm = c
			}
		}
		if cm == nil {
			t.Fatalf("%s: no portbridge ConfigMap", name)
		}
		files[name] = cm.Data
		appConfig := cm.Data["app-config.portbridge.yaml"]
		var ac struct {
			Backend struct {
				Auth struct {
					ExternalAccess []struct {
						Type    string
						Options struct{ Token, Subject string }
					} `json:"externalAccess"`
				}
			}
			PortBridge struct {
				SidecarURL string `json:"sidecarUrl"`
				Token      string
			} `json:"portBridge"`
		}
		if err := yaml.Unmarshal([]byte(appConfig), &ac); err != nil {
			t.Fatalf("%s: app-config: %v", name, err)
		}
		ea := ac.Backend.Auth.ExternalAccess
		if len(ea) != 1 || ea[0].Type != "static" || ea[0].Options.Subject == "" {
			t.Errorf("%s: externalAccess %+v", name, ea)
		}
		env := map[string]bool{}
		for _, e := range bs.Env {
			env[e.Name] = e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		}
		for _, ref := range []string{ea[0].Options.Token, ac.PortBridge.Token} {
			v := strings.TrimSuffix(strings.TrimPrefix(ref, "${"), "}")
			if v == ref || !env[v] {
				t.Errorf("%s: app-config value %q is not a ${VAR} set on the Backstage container from the Secret", name, ref)
			}
		}
		if want := fmt.Sprintf("http://127.0.0.1:%d", pb.Ports[0].ContainerPort); ac.PortBridge.SidecarURL != want {
			t.Errorf("%s: sidecarUrl %s, want %s", name, ac.PortBridge.SidecarURL, want)
		}
		mounted := slices.ContainsFunc(bs.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/app/app-config.portbridge.yaml" })
		if !mounted || !slices.Contains(bs.Args, "/app/app-config.portbridge.yaml") {
			t.Errorf("%s: app-config.portbridge.yaml not mounted (%v) or not in args %v", name, mounted, bs.Args)
		}
	}
	strip := func(s string) string {
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				keep = append(keep, strings.SplitN(l, " #", 2)[0])
			}
		}
		return strings.Join(keep, "\n")
	}
	a, b := files["official chart values"], files["kustomize sidecar"]
	for _, k := range []string{"config.yaml", "app-config.portbridge.yaml"} {
		if strip(a[k]) != strip(b[k]) {
			t.Errorf("%s differs between %s and kustomize/sidecar:\n%s\n---\n%s", k, valuesFile, a[k], b[k])
		}
	}
}

// TestConfigFiles loads every portbridge config file the manifests carry with
// the product's own loader (sidecar/config), with the secrets supplied the
// way the manifests supply them: PORTBRIDGE_* variables. The loader runs in
// the root module through `go run` of a small program, so this module does not
// depend on the product's module.
func TestConfigFiles(t *testing.T) {
	t.Parallel()
	configs := map[string]string{}
	add := func(name, manifest string) {
		objs, err := kube.Decode(name, []byte(manifest))
		if err != nil {
			t.Fatal(err)
		}
		files, err := kube.ConfigFiles(objs)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range files {
			configs[k] = v
		}
	}
	for _, vals := range []string{
		"image: {repository: r.example/pb}\nexistingSecret: s\n",
		"image: {repository: r.example/pb}\nexistingSecret: s\nportAppConfig: 'resources: []'\n",
	} {
		m, err := render.Helm(context.Background(), chartDir, "pb", "default", values(t, vals))
		if err != nil {
			t.Fatal(err)
		}
		add("helm "+vals, m)
	}
	for _, dir := range []string{"kustomize/standalone", "kustomize/sidecar"} {
		m, err := render.Kustomize(dir)
		if err != nil {
			t.Fatal(err)
		}
		add(dir, m)
	}
	for name, objs := range sidecarManifests(t) {
		files, err := kube.ConfigFiles(objs)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range files {
			configs[name+" "+k] = v
		}
	}
	if len(configs) != 6 {
		t.Errorf("found %d config files, want 6: %v", len(configs), slices.Collect(maps.Keys(configs)))
	}
	// A negative control proves the loader really rejects something.
	configs["control: misspelled key"] = "server:\n  listen: \":8080\"\nsync:\n  resyncIntervall: 1h\n"

	dir := t.TempDir()
	var args []string
	names := map[string]string{}
	i := 0
	for name, content := range configs {
		path := filepath.Join(dir, fmt.Sprintf("config-%d.yaml", i))
		i++
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, path)
		names[path] = name
	}
	results := loadConfigs(t, args)
	for path, name := range names {
		err := results[path]
		if strings.HasPrefix(name, "control:") {
			if !strings.Contains(err, "unknown key sync.resyncIntervall") {
				t.Errorf("the loader accepted a misspelled key (%q); the check proves nothing", err)
			}
			continue
		}
		if err != "" {
			t.Errorf("%s: %s", name, err)
		}
	}
}

const loaderProgram = `package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/portbridge/portbridge/sidecar/config"
)

// Loads each file named on the command line; prints "path<TAB>error" lines.
func main() {
	for _, path := range os.Args[1:] {
		msg := ""
		if _, err := config.Load(path, os.Getenv); err != nil {
			msg = strings.ReplaceAll(err.Error(), "\n", " | ")
		}
		fmt.Printf("%s\t%s\n", path, msg)
	}
}
`

func loadConfigs(t *testing.T, paths []string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	prog := filepath.Join(dir, "main.go")
	if err := os.WriteFile(prog, []byte(loaderProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", append([]string{"run", prog}, paths...)...)
	cmd.Dir = ".." // the product's module
	cmd.Env = append(os.Environ(),
		"PORTBRIDGE_SERVER_TOKEN=server-token-value",
		"PORTBRIDGE_BACKSTAGE_TOKEN=backstage-token-value",
		"PORTBRIDGE_PORT_CLIENT_ID=client-id",
		"PORTBRIDGE_PORT_CLIENT_SECRET=client-secret",
	)
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("run the config loader: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("run the config loader: %v", err)
	}
	res := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, msg, _ := strings.Cut(line, "\t")
		res[path] = msg
	}
	return res
}

// TestBackstageForStandalone renders the Backstage side of the standalone
// variant and checks that its module reaches the portbridge chart's Service
// with the same Secret, and that both agree on the Backstage token.
func TestBackstageForStandalone(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("helm/values-backstage-for-standalone.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.UnmarshalStrict(b, &v); err != nil {
		t.Fatal(err)
	}
	manifest := officialChart(t, v)
	objs, err := kube.Decode("backstage for standalone", []byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	if err := kube.CheckRefs(objs, ext("portbridge")); err != nil {
		t.Fatal(err)
	}
	bs := container(t, find[*appsv1.Deployment](t, objs, "Deployment", "backstage").Spec.Template.Spec, "backstage-backend")
	if want := []string{"--config", "app-config.yaml", "--config", "/app/app-config.portbridge.yaml"}; !slices.Equal(bs.Args, want) {
		t.Errorf("backstage args %q, want %q", bs.Args, want)
	}
	cm := find[*corev1.ConfigMap](t, objs, "ConfigMap", "portbridge-backstage")
	var ac struct {
		PortBridge struct {
			SidecarURL string `json:"sidecarUrl"`
		} `json:"portBridge"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["app-config.portbridge.yaml"]), &ac); err != nil {
		t.Fatal(err)
	}
	// The portbridge chart installed as release "portbridge".
	chart, err := render.Helm(context.Background(), chartDir, "portbridge", "backstage",
		values(t, "image: {repository: r.example/pb}\nexistingSecret: portbridge\n"))
	if err != nil {
		t.Fatal(err)
	}
	pobjs := validate(t, "portbridge chart", chart, ext("portbridge"))
	svc := find[*corev1.Service](t, pobjs, "Service", "")
	if want := fmt.Sprintf("http://%s:%d", svc.Name, svc.Spec.Ports[0].Port); ac.PortBridge.SidecarURL != want {
		t.Errorf("sidecarUrl %s, want the chart's Service %s", ac.PortBridge.SidecarURL, want)
	}
}

// TestStandaloneConfigsAgree: the portbridge chart's default config and the
// kustomize standalone config.yaml say the same thing.
func TestStandaloneConfigsAgree(t *testing.T) {
	t.Parallel()
	chart, err := render.Helm(context.Background(), chartDir, "portbridge", "backstage",
		values(t, "image: {repository: r.example/pb}\nexistingSecret: portbridge\n"))
	if err != nil {
		t.Fatal(err)
	}
	kust, err := render.Kustomize("kustomize/standalone")
	if err != nil {
		t.Fatal(err)
	}
	var parsed []map[string]any
	for name, m := range map[string]string{"chart": chart, "kustomize": kust} {
		objs, err := kube.Decode(name, []byte(m))
		if err != nil {
			t.Fatal(err)
		}
		files, err := kube.ConfigFiles(objs)
		if err != nil || len(files) != 1 {
			t.Fatalf("%s: config files %v, %v", name, files, err)
		}
		for _, content := range files {
			var v map[string]any
			if err := yaml.Unmarshal([]byte(content), &v); err != nil {
				t.Fatal(err)
			}
			parsed = append(parsed, v)
		}
	}
	a, _ := yaml.Marshal(parsed[0])
	b, _ := yaml.Marshal(parsed[1])
	if string(a) != string(b) {
		t.Errorf("the chart's config and kustomize/standalone/config.yaml differ:\n%s\n---\n%s", a, b)
	}
}
