// Package render turns the deploy/ sources into Kubernetes manifests with the
// real tools' Go packages: Helm (helm.sh/helm/v3, as `helm template` does) for
// charts, and kustomize (sigs.k8s.io/kustomize/api/krusty, as `kubectl
// kustomize` does) for the plain manifests.
package render

import (
	"context"
	"fmt"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Helm renders the chart in dir with values, as `helm template RELEASE DIR
// --namespace NS` does, and returns the manifest stream.
func Helm(ctx context.Context, dir, release, namespace string, values map[string]any) (string, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return "", fmt.Errorf("load chart %s: %w", dir, err)
	}
	return HelmChart(ctx, ch, release, namespace, values)
}

// HelmChart renders an already loaded (or built in memory) chart.
func HelmChart(ctx context.Context, ch *chart.Chart, release, namespace string, values map[string]any) (string, error) {
	install := action.NewInstall(&action.Configuration{})
	install.DryRun = true
	install.DryRunOption = "client"
	install.ClientOnly = true
	install.Replace = true
	install.ReleaseName = release
	install.Namespace = namespace
	install.KubeVersion = &chartutil.KubeVersion{Version: "v1.33.0", Major: "1", Minor: "33"}
	rel, err := install.RunWithContext(ctx, ch, values)
	if err != nil {
		return "", fmt.Errorf("render chart %s: %w", ch.Name(), err)
	}
	return rel.Manifest, nil
}

// Lint runs `helm lint --strict` on the chart in dir with values: warnings
// fail too.
func Lint(dir string, values map[string]any) error {
	lint := action.NewLint()
	lint.Strict = true
	lint.Namespace = "default"
	res := lint.Run([]string{dir}, values)
	var problems []string
	for _, m := range res.Messages {
		if m.Severity >= support.WarningSev {
			problems = append(problems, m.Error())
		}
	}
	for _, err := range res.Errors {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("helm lint %s:\n  %s", dir, strings.Join(dedupe(problems), "\n  "))
	}
	return nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// Kustomize builds the kustomization in dir from the local filesystem, as
// `kubectl kustomize DIR` does, and returns the manifest stream.
func Kustomize(dir string) (string, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return "", fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		return "", fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return string(out), nil
}
