// Command image builds the portbridge container image with ko for linux/amd64
// and linux/arm64 into a local OCI image layout, without a Docker engine or a
// registry, then checks it: both platforms present, non-root user, static
// binaries stamped with version and commit, and the host's binary runs
// `portbridge version`.
//
// Run from the deploy module: go -C deploy run ./cmd/image [-out DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/portbridge/portbridge/deploy/internal/image"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	repo := fs.String("repo", "..", "repository root (holds .ko.yaml and ./sidecar); relative paths are relative to the working directory, deploy/ under `go -C deploy run`")
	out := fs.String("out", "../bin/image", "OCI image layout to write (replaced if it exists)")
	version := fs.String("version", "", "version to stamp (default: git describe --tags --always --dirty)")
	commit := fs.String("commit", "", "commit to stamp (default: git rev-parse HEAD)")
	ko := fs.String("ko", "", "ko binary (default: the one pinned in deploy/go.mod, via `go tool -n ko`)")
	certs := fs.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM CA bundle to put into the base image")
	platforms := fs.String("platform", "linux/amd64,linux/arm64", "platforms to build")
	source := fs.String("source", "", "value of the org.opencontainers.image.source label (optional)")
	push := fs.String("push", "", "also push the multi-platform image to this `REPOSITORY` (e.g. registry.example.com/platform/portbridge); credentials from ~/.docker/config.json")
	tags := fs.String("tags", "", "comma-separated tags for -push (default: the version)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	repoDir, err := filepath.Abs(*repo)
	if err != nil {
		return err
	}
	outDir, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	if *version == "" {
		if *version, err = git(ctx, repoDir, "describe", "--tags", "--always", "--dirty"); err != nil {
			return fmt.Errorf("find the version (or pass -version): %w", err)
		}
	}
	if *commit == "" {
		if *commit, err = git(ctx, repoDir, "rev-parse", "HEAD"); err != nil {
			return fmt.Errorf("find the commit (or pass -commit): %w", err)
		}
	}
	if *ko == "" {
		// `go tool -n` builds the pinned tool if needed and prints its path.
		b, err := exec.CommandContext(ctx, "go", "tool", "-n", "ko").Output()
		if err != nil {
			return fmt.Errorf("find ko with `go tool -n ko` (run from the deploy module, or pass -ko): %w", err)
		}
		*ko = strings.TrimSpace(string(b))
	}

	ref, err := image.Build(ctx, image.BuildOptions{
		Ko: *ko, RepoDir: repoDir, OutDir: outDir, CABundle: *certs,
		Platforms: strings.Split(*platforms, ","), Version: *version, Commit: *commit,
		Source: *source, PushRepo: *push, Tags: splitNonEmpty(*tags), Logger: log,
	})
	if err != nil {
		return err
	}
	variants, err := image.Inspect(outDir)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "portbridge-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	var errs []error
	seen := map[string]bool{}
	fmt.Fprintf(stdout, "image %s (version %s, commit %s) in OCI layout %s\n", ref, *version, *commit, outDir)
	if *push != "" {
		pushed := splitNonEmpty(*tags)
		if len(pushed) == 0 {
			pushed = []string{*version}
		}
		fmt.Fprintf(stdout, "pushed to %s, tags %s\n", *push, strings.Join(pushed, ", "))
	}
	fmt.Fprintf(stdout, "%-14s %-73s %10s  %s\n", "PLATFORM", "DIGEST", "SIZE", "portbridge version")
	for _, v := range variants {
		seen[v.Platform] = true
		if err := image.Check(v, *version, *commit); err != nil {
			errs = append(errs, err)
		}
		ran := "(cannot run on " + runtime.GOOS + "/" + runtime.GOARCH + "; checked: ELF arch, static, stamped)"
		if v.Platform == runtime.GOOS+"/"+runtime.GOARCH {
			got, err := image.RunVersion(ctx, v, tmp)
			switch {
			case err != nil:
				errs = append(errs, err)
			case !strings.Contains(got, *version) || !strings.Contains(got, *commit):
				errs = append(errs, fmt.Errorf("%s: `portbridge version` printed %q, want version %s and commit %s", v.Platform, got, *version, *commit))
			}
			ran = strings.TrimSpace(got)
		}
		fmt.Fprintf(stdout, "%-14s %-73s %8.1fMB  %s\n", v.Platform, v.Digest, float64(v.Size)/1e6, ran)
	}
	for _, p := range strings.Split(*platforms, ",") {
		if !seen[p] {
			errs = append(errs, fmt.Errorf("platform %s is missing from the image index", p))
		}
	}
	return errors.Join(errs...)
}

func splitNonEmpty(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(b)), nil
}
