// Package image builds the portbridge container image with ko and checks what
// it built. No registry is needed: the base image (package baseimage) is
// served to ko from an in-process registry on 127.0.0.1, and ko writes the
// multi-platform result to a local OCI image layout.
package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/portbridge/portbridge/deploy/internal/baseimage"
)

// VersionPkg is the package whose Version and Commit variables the linker
// stamps (see .ko.yaml).
const VersionPkg = "github.com/portbridge/portbridge/sidecar/version"

// BuildOptions says what to build and where.
type BuildOptions struct {
	Ko        string   // path of the ko binary
	RepoDir   string   // repository root: holds .ko.yaml and ./sidecar
	OutDir    string   // OCI image layout to (re)create
	CABundle  string   // PEM CA bundle copied into the base image
	Platforms []string // e.g. linux/amd64, linux/arm64
	Version   string   // stamped into the binary (VERSION in .ko.yaml)
	Commit    string   // stamped into the binary (COMMIT in .ko.yaml)
	Source    string   // optional org.opencontainers.image.source label
	PushRepo  string   // optional: also push to this repository (ko's KO_DOCKER_REPO), credentials from the Docker config
	Tags      []string // tags for PushRepo (default: Version)
	Logger    *slog.Logger
}

// Build builds the base image, serves it on 127.0.0.1, and runs
// `ko build --push=false --oci-layout-path OutDir` in RepoDir. It returns the
// image reference ko printed.
func Build(ctx context.Context, o BuildOptions) (string, error) {
	if o.Version == "" || o.Commit == "" {
		return "", errors.New("build image: version and commit must be set")
	}
	if strings.ContainsAny(o.Version+o.Commit, " \t\n'\"") {
		return "", fmt.Errorf("build image: version %q or commit %q contains a space or quote", o.Version, o.Commit)
	}
	if err := resetLayout(o.OutDir); err != nil {
		return "", err
	}
	certs, err := os.ReadFile(o.CABundle)
	if err != nil {
		return "", fmt.Errorf("build image: read CA bundle: %w", err)
	}
	idx, err := baseimage.Index(certs, baseimage.Platforms())
	if err != nil {
		return "", err
	}

	// ko turns the layout path into an image reference, so it must be
	// lower-case letters, digits and ._-/ only. It gets a relative path under
	// RepoDir/bin (ignored by git), moved to OutDir afterwards.
	if err := os.MkdirAll(filepath.Join(o.RepoDir, "bin"), 0o755); err != nil {
		return "", fmt.Errorf("build image: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Join(o.RepoDir, "bin"), ".ko-layout-")
	if err != nil {
		return "", fmt.Errorf("build image: %w", err)
	}
	defer os.RemoveAll(tmp)
	tmpRel, err := filepath.Rel(o.RepoDir, tmp)
	if err != nil {
		return "", fmt.Errorf("build image: %w", err)
	}
	// The registry listens on a random loopback port, but the base image's
	// name must not depend on it: ko writes it into the image's annotations
	// (org.opencontainers.image.base.name), and the same commit must give the
	// same digest. So the base is named under the reserved .localhost domain,
	// which go-containerregistry reaches over plain http, and ko reaches our
	// registry through HTTP_PROXY. Only plain-http requests use HTTP_PROXY;
	// ko's `go build` fetches modules over https, untouched, and Go never
	// proxies loopback addresses, so a push to 127.0.0.1 goes direct.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("build image: listen for the local base-image registry: %w", err)
	}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			// A client probing https first; the base registry is plain http.
			http.Error(w, "plain http only", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Hostname() != "" && r.URL.Hostname() != BaseHost {
			http.Error(w, "this proxy only serves "+BaseHost, http.StatusBadGateway)
			return
		}
		reg.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	base, err := name.ParseReference(BaseHost + "/portbridge/base:latest")
	if err != nil {
		return "", fmt.Errorf("build image: base image reference: %w", err)
	}
	proxy := "http://" + ln.Addr().String()
	proxyURL, err := url.Parse(proxy)
	if err != nil {
		return "", err
	}
	push := remote.WithTransport(&http.Transport{Proxy: http.ProxyURL(proxyURL)})
	if err := remote.WriteIndex(base, idx, remote.WithContext(ctx), push); err != nil {
		return "", fmt.Errorf("build image: push base image to %s: %w", base, err)
	}
	o.Logger.Info("base image ready", "ref", base.String(), "registry", ln.Addr().String())

	labels := []string{
		"org.opencontainers.image.title=portbridge",
		"org.opencontainers.image.version=" + o.Version,
		"org.opencontainers.image.revision=" + o.Commit,
	}
	if o.Source != "" {
		labels = append(labels, "org.opencontainers.image.source="+o.Source)
	}
	repo, pushArgs := "portbridge", []string{"--push=false"}
	if o.PushRepo != "" {
		tags := o.Tags
		if len(tags) == 0 {
			tags = []string{o.Version}
		}
		repo, pushArgs = o.PushRepo, []string{"--push=true", "--tags", strings.Join(tags, ",")}
	}
	args := append([]string{"build", "--bare", "--sbom=none"}, pushArgs...)
	args = append(args,
		"--oci-layout-path", filepath.ToSlash(tmpRel),
		"--platform", strings.Join(o.Platforms, ","),
		"--image-label", strings.Join(labels, ","),
		"./sidecar")
	cmd := exec.CommandContext(ctx, o.Ko, args...)
	cmd.Dir = o.RepoDir
	cmd.Env = append(koEnv(os.Environ()),
		"HTTP_PROXY="+proxy,
		"KO_DEFAULTBASEIMAGE="+base.String(),
		"KO_DOCKER_REPO="+repo,
		"KO_CONFIG_PATH="+filepath.Join(o.RepoDir, ".ko.yaml"),
		"VERSION="+o.Version,
		"COMMIT="+o.Commit,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	o.Logger.Info("running ko", "args", strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build image: ko build: %w\n%s", err, stderr.String())
	}
	if err := os.MkdirAll(filepath.Dir(o.OutDir), 0o755); err != nil {
		return "", fmt.Errorf("build image: %w", err)
	}
	if err := os.Rename(tmp, o.OutDir); err != nil {
		return "", fmt.Errorf("build image: move the layout to %s: %w", o.OutDir, err)
	}
	// ko names the image after the layout path; report the real one.
	_, digest, _ := strings.Cut(strings.TrimSpace(stdout.String()), "@")
	return o.OutDir + "@" + digest, nil
}

// BaseHost is the registry host in the base image's name; see Build.
const BaseHost = "base.portbridge.localhost"

// koEnv returns env without the plain-http proxy settings (Build sets its
// own) and without NO_PROXY entries that would send BaseHost around the
// proxy.
func koEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY":
			continue
		case "NO_PROXY":
			var keep []string
			for _, e := range strings.Split(v, ",") {
				d := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(e), "*"), ".")
				if d == "" || BaseHost == d || strings.HasSuffix(BaseHost, "."+d) {
					continue
				}
				keep = append(keep, strings.TrimSpace(e))
			}
			kv = k + "=" + strings.Join(keep, ",")
		}
		out = append(out, kv)
	}
	return out
}

// resetLayout removes a previous OCI layout at dir so ko writes a fresh one
// (ko appends to an existing layout). It refuses to remove a directory that
// is not empty and is not an OCI layout.
func resetLayout(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("build image: read output directory %s: %w", dir, err)
	}
	if len(entries) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return fmt.Errorf("build image: output directory %s is not empty and holds no oci-layout file; refusing to replace it", dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("build image: remove old layout %s: %w", dir, err)
	}
	return nil
}
