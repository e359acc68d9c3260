package render

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
)

// BackstageChartPath is where the official Backstage chart (backstage 2.8.2
// with its locked Bitnami dependencies, unmodified) lives relative to the
// deploy/ module: ../shared/testdata relative to the repository root, as CI
// has it.
const BackstageChartPath = "../../shared/testdata/helm/backstage-2.8.2.tgz"

// BackstageChartSHA256 is the archive's digest as published beside it; a
// changed archive is a different chart and fails loudly.
const BackstageChartSHA256 = "1c97b653158d1b694cb532338bfabd0d79efa2c472cdb4bdb485d50a2a497668"

// BackstageChart renders values through the official Backstage chart archive
// at path, as `helm template RELEASE backstage-2.8.2.tgz` does: the chart's
// own templates and its Bitnami "common" library, with its values.schema.json
// enforced (an unknown key under backstage, or a wrong type, fails).
func BackstageChart(ctx context.Context, path, release, namespace string, vals map[string]any) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("official Backstage chart: %w (CI keeps it at ../shared/testdata/helm relative to the repository root)", err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != BackstageChartSHA256 {
		return "", fmt.Errorf("official Backstage chart %s: sha256 %x, want %s (not the unmodified 2.8.2 archive)", path, sum, BackstageChartSHA256)
	}
	ch, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("load chart %s: %w", path, err)
	}
	if ch.Schema == nil {
		return "", fmt.Errorf("chart %s has no values.schema.json", path)
	}
	return HelmChart(ctx, ch, release, namespace, vals)
}

// ValuesFiles merges values files the way `helm -f a.yaml -f b.yaml` does
// (Helm's own CLI code): maps merge key by key, a later file wins for a key,
// lists are replaced whole, and --set style overrides come last.
func ValuesFiles(files []string, set ...string) (map[string]any, error) {
	opts := values.Options{ValueFiles: files, Values: set}
	v, err := opts.MergeValues(getter.Providers{})
	if err != nil {
		return nil, fmt.Errorf("merge values %v: %w", files, err)
	}
	return v, nil
}
