package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/portbridge/portbridge/deploy/internal/baseimage"
)

// Variant is one platform's image in the layout, with what Check looks at.
type Variant struct {
	Platform   string // "linux/amd64"
	Digest     string
	Size       int64 // compressed bytes of config and layers
	User       string
	Entrypoint []string
	Labels     map[string]string
	Files      map[string]*tar.Header // every path in the flattened filesystem, without leading "/"
	Binary     []byte                 // the entrypoint file
}

// Inspect reads the OCI layout ko wrote: its one image index and every
// platform image in it.
func Inspect(layoutDir string) ([]Variant, error) {
	p, err := layout.FromPath(layoutDir)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", layoutDir, err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", layoutDir, err)
	}
	topManifest, err := top.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", layoutDir, err)
	}
	if len(topManifest.Manifests) != 1 || !topManifest.Manifests[0].MediaType.IsIndex() {
		return nil, fmt.Errorf("inspect %s: want exactly one multi-platform image index, found %d entries", layoutDir, len(topManifest.Manifests))
	}
	idx, err := top.ImageIndex(topManifest.Manifests[0].Digest)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", layoutDir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", layoutDir, err)
	}
	var out []Variant
	for _, d := range im.Manifests {
		if d.Platform == nil {
			return nil, fmt.Errorf("inspect %s: manifest %s has no platform", layoutDir, d.Digest)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: image %s: %w", layoutDir, d.Digest, err)
		}
		v, err := variant(img, d)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: image %s (%s): %w", layoutDir, d.Digest, d.Platform, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func variant(img v1.Image, d v1.Descriptor) (Variant, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return Variant{}, err
	}
	v := Variant{
		Platform:   d.Platform.OS + "/" + d.Platform.Architecture,
		Digest:     d.Digest.String(),
		User:       cf.Config.User,
		Entrypoint: cf.Config.Entrypoint,
		Labels:     cf.Config.Labels,
		Files:      map[string]*tar.Header{},
	}
	layers, err := img.Layers()
	if err != nil {
		return Variant{}, err
	}
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return Variant{}, err
		}
		v.Size += n
	}
	if len(v.Entrypoint) == 0 {
		return Variant{}, errors.New("image has no entrypoint")
	}
	entry := strings.TrimPrefix(v.Entrypoint[0], "/")
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Variant{}, fmt.Errorf("read filesystem: %w", err)
		}
		path := strings.TrimSuffix(strings.TrimPrefix(h.Name, "/"), "/")
		v.Files[path] = h
		if path == entry {
			if v.Binary, err = io.ReadAll(tr); err != nil {
				return Variant{}, fmt.Errorf("read %s: %w", entry, err)
			}
		}
	}
	if v.Binary == nil {
		return Variant{}, fmt.Errorf("entrypoint %s is not in the image", v.Entrypoint[0])
	}
	return v, nil
}

var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// Check verifies one variant: it runs as uid 65532, its binary is a static
// Go binary for its platform stamped with version and commit, and the base
// layer's files are there.
func Check(v Variant, version, commit string) error {
	var errs []error
	if uid, _, _ := strings.Cut(v.User, ":"); uid != fmt.Sprint(baseimage.UID) {
		errs = append(errs, fmt.Errorf("%s: user is %q, want %d (nonroot)", v.Platform, v.User, baseimage.UID))
	}
	_, arch, _ := strings.Cut(v.Platform, "/")
	f, err := elf.NewFile(bytes.NewReader(v.Binary))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: entrypoint is not an ELF binary: %w", v.Platform, err))
	} else {
		if want, ok := elfMachine[arch]; !ok || f.Machine != want {
			errs = append(errs, fmt.Errorf("%s: binary is for %s", v.Platform, f.Machine))
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				errs = append(errs, fmt.Errorf("%s: binary is dynamically linked; the base image has no libc", v.Platform))
			}
		}
	}
	if bi, err := buildinfo.Read(bytes.NewReader(v.Binary)); err != nil {
		errs = append(errs, fmt.Errorf("%s: read Go build info: %w", v.Platform, err))
	} else {
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		// -trimpath keeps -ldflags out of the build info, so look for the
		// stamped strings in the binary's data instead.
		for _, want := range []string{version, commit} {
			if !bytes.Contains(v.Binary, []byte(want)) {
				errs = append(errs, fmt.Errorf("%s: binary does not contain the stamped string %q", v.Platform, want))
			}
		}
		if settings["GOARCH"] != arch || settings["CGO_ENABLED"] != "0" {
			errs = append(errs, fmt.Errorf("%s: built with GOARCH=%s CGO_ENABLED=%s", v.Platform, settings["GOARCH"], settings["CGO_ENABLED"]))
		}
	}
	for _, path := range []string{"etc/passwd", "etc/group", strings.TrimPrefix(baseimage.CertFile, "/")} {
		if h := v.Files[path]; h == nil || h.Typeflag != tar.TypeReg {
			errs = append(errs, fmt.Errorf("%s: /%s is missing", v.Platform, path))
		}
	}
	if h := v.Files[strings.TrimPrefix(baseimage.StateDir, "/")]; h == nil || h.Uid != baseimage.UID {
		errs = append(errs, fmt.Errorf("%s: %s is missing or not owned by %d", v.Platform, baseimage.StateDir, baseimage.UID))
	}
	if v.Labels["org.opencontainers.image.version"] != version || v.Labels["org.opencontainers.image.revision"] != commit {
		errs = append(errs, fmt.Errorf("%s: labels %v do not carry version %s and commit %s", v.Platform, v.Labels, version, commit))
	}
	return errors.Join(errs...)
}

// RunVersion writes the variant's binary to dir and runs `<binary> version`,
// returning its output. Only the variant of the host's architecture can run.
func RunVersion(ctx context.Context, v Variant, dir string) (string, error) {
	path := filepath.Join(dir, "portbridge-"+strings.ReplaceAll(v.Platform, "/", "-"))
	if err := os.WriteFile(path, v.Binary, 0o755); err != nil {
		return "", fmt.Errorf("write %s binary: %w", v.Platform, err)
	}
	out, err := exec.CommandContext(ctx, path, "version").CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("run %s version: %w: %s", v.Platform, err, out)
	}
	return string(out), nil
}
