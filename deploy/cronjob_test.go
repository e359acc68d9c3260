package deploy_test

// The scheduled resync beside the bridge: the Helm chart's resyncCronJob
// (modes trigger and sync-once) and the kustomize components resync-cronjob
// and sync-once-cronjob, rendered with the real tools and decoded strictly.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/portbridge/portbridge/deploy/internal/render"
)

// checkJobContainer checks what every scheduled-resync container must keep:
// the security settings of the bridge, requests and a memory limit,
// secrets only from the Secret, a Job that is never retried into a second
// resync and never runs twice at once.
func checkJobContainer(t *testing.T, cj *batchv1.CronJob) corev1.Container {
	t.Helper()
	spec := cj.Spec.JobTemplate.Spec.Template.Spec
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent || spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("concurrency %s restart %s, want Forbid and Never", cj.Spec.ConcurrencyPolicy, spec.RestartPolicy)
	}
	if b := cj.Spec.JobTemplate.Spec.BackoffLimit; b == nil || *b != 0 {
		t.Errorf("backoffLimit %v, want 0 (a failed resync is reported, not repeated)", b)
	}
	if d := cj.Spec.JobTemplate.Spec.ActiveDeadlineSeconds; d == nil || *d <= 0 {
		t.Error("no activeDeadlineSeconds")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	psc := spec.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container security context %+v", sc)
	}
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("pod security context %+v", psc)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v", c.Resources)
	}
	for _, e := range c.Env {
		if strings.Contains(e.Name, "TOKEN") || strings.Contains(e.Name, "SECRET") || strings.Contains(e.Name, "CLIENT_ID") {
			if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				t.Errorf("env %s is not from the Secret", e.Name)
			}
		}
	}
	return c
}

func TestHelmResyncCronJob(t *testing.T) {
	t.Parallel()
	base := "image: {repository: registry.example.com/platform/portbridge}\nexistingSecret: portbridge\n"
	for _, tc := range []struct {
		name, values string
		check        func(t *testing.T, c corev1.Container, cj *batchv1.CronJob)
	}{
		{"trigger", base + "resyncCronJob: {enabled: true, verify: true}\n", func(t *testing.T, c corev1.Container, cj *batchv1.CronJob) {
			want := []string{"resync", "--wait", "--addr", "http://pb-portbridge:8080", "--reason", "cronjob", "--timeout", "3600s", "--verify"}
			if !slices.Equal(c.Args, want) {
				t.Errorf("args %q, want %q", c.Args, want)
			}
			if len(c.Env) != 1 || c.Env[0].Name != "PORTBRIDGE_TOKEN" {
				t.Errorf("env %+v", c.Env)
			}
			if cj.Spec.Schedule != "17 * * * *" {
				t.Errorf("schedule %q", cj.Spec.Schedule)
			}
		}},
		{"sync-once", base + "resyncCronJob: {enabled: true, mode: sync-once, schedule: '*/30 * * * *', timeZone: Europe/Berlin}\n",
			func(t *testing.T, c corev1.Container, cj *batchv1.CronJob) {
				if !slices.Equal(c.Args, []string{"sync", "--once", "--ephemeral-state", "--config", "/etc/portbridge/config.yaml"}) {
					t.Errorf("args %q", c.Args)
				}
				if len(c.Env) != 4 || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/tmp" }) {
					t.Errorf("env %+v mounts %+v", c.Env, c.VolumeMounts)
				}
				if cj.Spec.TimeZone == nil || *cj.Spec.TimeZone != "Europe/Berlin" || cj.Spec.Schedule != "*/30 * * * *" {
					t.Errorf("schedule %q zone %v", cj.Spec.Schedule, cj.Spec.TimeZone)
				}
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
			objs := validate(t, "helm "+tc.name, manifest, ext("portbridge"))
			cj := find[*batchv1.CronJob](t, objs, "CronJob", "pb-portbridge-resync")
			tc.check(t, checkJobContainer(t, cj), cj)
		})
	}
	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		manifest, err := render.Helm(context.Background(), chartDir, "pb", "backstage", values(t, base))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(manifest, "kind: CronJob") {
			t.Error("a CronJob is rendered by default")
		}
	})
	t.Run("bad mode", func(t *testing.T) {
		t.Parallel()
		_, err := render.Helm(context.Background(), chartDir, "pb", "backstage", values(t, base+"resyncCronJob: {enabled: true, mode: daily}\n"))
		if err == nil || !strings.Contains(err.Error(), "resyncCronJob.mode must be trigger or sync-once") {
			t.Errorf("err %v", err)
		}
	})
}

func TestKustomizeResyncCronJobs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		component, name string
		args            []string
	}{
		{"resync-cronjob", "portbridge-resync", []string{"resync", "--wait", "--addr", "http://portbridge:8080", "--reason", "cronjob", "--timeout", "3600s"}},
		{"sync-once-cronjob", "portbridge-sync-once", []string{"sync", "--once", "--ephemeral-state", "--config", "/etc/portbridge/config.yaml"}},
	} {
		t.Run(tc.component, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			rel := func(p string) string {
				a, _ := filepath.Abs(p)
				r, err := filepath.Rel(dir, a)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			body := fmt.Sprintf("resources: [%s]\ncomponents: [%s]\nimages: [{name: portbridge, newName: registry.example.com/platform/portbridge, newTag: v0.1.0}]\n",
				rel("kustomize/standalone"), rel("kustomize/components/"+tc.component))
			if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			manifest, err := render.Kustomize(dir)
			if err != nil {
				t.Fatal(err)
			}
			objs := validate(t, tc.component, manifest, ext("portbridge"))
			cj := find[*batchv1.CronJob](t, objs, "CronJob", tc.name)
			c := checkJobContainer(t, cj)
			if !slices.Equal(c.Args, tc.args) || c.Image != "registry.example.com/platform/portbridge:v0.1.0" {
				t.Errorf("args %q image %s", c.Args, c.Image)
			}
			// The sync-once job reads the standalone's generated ConfigMap
			// (kustomize rewrote the name with its hash).
			for _, v := range cj.Spec.JobTemplate.Spec.Template.Spec.Volumes {
				if v.ConfigMap != nil && !strings.HasPrefix(v.ConfigMap.Name, "portbridge-config-") {
					t.Errorf("config volume %q does not follow the generated ConfigMap", v.ConfigMap.Name)
				}
			}
		})
	}
}
