package image

import (
	"log"
	"net/http/httptest"

	"archive/tar"
	"context"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// fixture is a tiny module with the same import paths as the product, so the
// real .ko.yaml builds it: the test exercises ko, the base image and the
// checks without compiling the whole sidecar.
var fixture = map[string]string{
	"go.mod": "module github.com/portbridge/portbridge\n\ngo 1.26\n",
	"sidecar/version/version.go": `package version

var (
	Version = "dev"
	Commit  = ""
)
`,
	"sidecar/main.go": `package main

import (
	"fmt"
	"os"

	"github.com/portbridge/portbridge/sidecar/version"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "version" {
		fmt.Printf("portbridge %s (%s)\n", version.Version, version.Commit)
		return
	}
	os.Exit(2)
}
`,
}

func writeFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range fixture {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	koYAML, err := os.ReadFile("../../../.ko.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".ko.yaml"), koYAML, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func koPath(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "tool", "-n", "ko").Output()
	if err != nil {
		t.Fatalf("go tool -n ko: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestBuildWithKo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two images with ko; skipped with -short")
	}
	t.Parallel()
	ctx := context.Background()
	repo := writeFixture(t)
	opts := BuildOptions{
		Ko: koPath(t), RepoDir: repo, OutDir: filepath.Join(repo, "bin", "image"),
		CABundle: "/etc/ssl/certs/ca-certificates.crt", Platforms: []string{"linux/amd64", "linux/arm64"},
		Version: "v9.8.7-test", Commit: "0123456789abcdef0123456789abcdef01234567",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if _, err := os.Stat(opts.CABundle); err != nil {
		t.Fatalf("the machine's CA bundle is needed: %v", err)
	}
	ref, err := Build(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	variants, err := Inspect(opts.OutDir)
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, v := range variants {
		platforms = append(platforms, v.Platform)
		if err := Check(v, opts.Version, opts.Commit); err != nil {
			t.Error(err)
		}
		if v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
			continue
		}
		out, err := RunVersion(ctx, v, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if want := "portbridge v9.8.7-test (0123456789abcdef0123456789abcdef01234567)"; strings.TrimSpace(out) != want {
			t.Errorf("version printed %q, want %q", out, want)
		}
	}
	if !slices.Equal(platforms, opts.Platforms) {
		t.Errorf("platforms %v, want %v", platforms, opts.Platforms)
	}

	t.Run("reproducible", func(t *testing.T) {
		again, err := Build(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if again != ref {
			t.Errorf("second build %s differs from first %s", again, ref)
		}
	})

	t.Run("check rejects", func(t *testing.T) {
		good := variants[0]
		for _, tc := range []struct {
			name   string
			mutate func(v *Variant)
			ver    string
			want   string
		}{
			{"root user", func(v *Variant) { v.User = "0" }, opts.Version, "user is"},
			{"empty user", func(v *Variant) { v.User = "" }, opts.Version, "user is"},
			{"other arch binary", func(v *Variant) { v.Binary = variants[1].Binary }, opts.Version, "binary is for"},
			{"not a binary", func(v *Variant) { v.Binary = []byte("#!/bin/sh\n") }, opts.Version, "not an ELF"},
			{"unstamped version", func(v *Variant) {}, "v0.0.0-other", "does not contain the stamped string"},
			{"no CA bundle", func(v *Variant) { delete(v.Files, "etc/ssl/certs/ca-certificates.crt") }, opts.Version, "ca-certificates.crt is missing"},
			{"state dir owned by root", func(v *Variant) { h := *v.Files["var/lib/portbridge"]; h.Uid = 0; v.Files["var/lib/portbridge"] = &h }, opts.Version, "/var/lib/portbridge is missing or not owned"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				v := good
				v.Files = map[string]*tar.Header{}
				for k, h := range good.Files {
					v.Files[k] = h
				}
				tc.mutate(&v)
				err := Check(v, tc.ver, opts.Commit)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("err %v, want %q", err, tc.want)
				}
			})
		}
	})
}

func TestBuildRejectsBadInput(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		opts BuildOptions
		want string
	}{
		{"no version", BuildOptions{Commit: "abc", Logger: log}, "version and commit must be set"},
		{"no commit", BuildOptions{Version: "v1", Logger: log}, "version and commit must be set"},
		{"space in version", BuildOptions{Version: "v1 x", Commit: "abc", Logger: log}, "contains a space or quote"},
		{"missing CA bundle", BuildOptions{Version: "v1", Commit: "abc", CABundle: "/nonexistent/ca.crt", OutDir: t.TempDir(), Logger: log}, "read CA bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestResetLayout(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mk := func(name string, files ...string) string {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	if err := resetLayout(filepath.Join(root, "absent")); err != nil {
		t.Errorf("absent dir: %v", err)
	}
	if err := resetLayout(mk("empty")); err != nil {
		t.Errorf("empty dir: %v", err)
	}
	layout := mk("layout", "oci-layout", "index.json")
	if err := resetLayout(layout); err != nil {
		t.Errorf("old layout: %v", err)
	}
	if _, err := os.Stat(layout); !os.IsNotExist(err) {
		t.Errorf("old layout still there: %v", err)
	}
	other := mk("other", "precious.txt")
	if err := resetLayout(other); err == nil || !strings.Contains(err.Error(), "refusing to replace") {
		t.Errorf("non-layout dir: err %v, want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(other, "precious.txt")); err != nil {
		t.Errorf("a non-layout directory was touched: %v", err)
	}
}

func TestKoEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want []string
	}{
		{[]string{"PATH=/bin", "HTTP_PROXY=http://corp:3128", "http_proxy=http://corp:3128", "HTTPS_PROXY=http://corp:3128"}, []string{"PATH=/bin", "HTTPS_PROXY=http://corp:3128"}},
		{[]string{"NO_PROXY=localhost,.corp.example,127.0.0.1"}, []string{"NO_PROXY=.corp.example,127.0.0.1"}},
		{[]string{"no_proxy=*"}, []string{"no_proxy="}},
		{[]string{"NO_PROXY=.localhost, portbridge.localhost,*.localhost,other.localhost"}, []string{"NO_PROXY=other.localhost"}},
	} {
		if got := koEnv(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("koEnv(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestPush builds the fixture and pushes it to an in-process registry on
// 127.0.0.1, the way `-push` does for a real registry: the pushed tag is the
// same multi-platform index as the layout's.
func TestPush(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two images with ko; skipped with -short")
	}
	// Not parallel: it runs before TestBuildWithKo, which then finds the Go
	// build cache warm instead of compiling the same packages concurrently.
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	repo := strings.TrimPrefix(reg.URL, "http://") + "/platform/portbridge"
	dir := writeFixture(t)
	opts := BuildOptions{
		Ko: koPath(t), RepoDir: dir, OutDir: filepath.Join(dir, "bin", "image"),
		CABundle: "/etc/ssl/certs/ca-certificates.crt", Platforms: []string{"linux/amd64", "linux/arm64"},
		Version: "v1.0.0", Commit: "fedcba9876543210fedcba9876543210fedcba98", PushRepo: repo, Tags: []string{"v1.0.0", "stable"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	ref, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	_, want, _ := strings.Cut(ref, "@")
	for _, tag := range opts.Tags {
		r, err := name.ParseReference(repo + ":" + tag)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Index(r)
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		got, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != want {
			t.Errorf("%s is %s, want the layout's index %s", r, got, want)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(im.Manifests) != 2 || !im.Manifests[0].MediaType.IsImage() {
			t.Errorf("%s: %d manifests (%s), want 2 images", r, len(im.Manifests), im.Manifests[0].MediaType)
		}
	}
}
