// Package baseimage builds the minimal, non-root base image that ko puts the
// portbridge binary on: one layer with /etc/passwd and /etc/group for the
// user nonroot (uid and gid 65532), the CA certificate bundle, and the
// directories the sidecar needs (/tmp, /home/nonroot, /var/lib/portbridge),
// as a multi-platform OCI index. It downloads nothing: the certificates come
// from the build machine.
package baseimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// UID and GID of the user every container runs as (the "nonroot" user of
// distroless and Chainguard images, so existing policies recognise it).
const (
	UID = 65532
	GID = 65532
)

// StateDir is the sidecar's default state directory, owned by UID.
const StateDir = "/var/lib/portbridge"

// CertFile is where the CA bundle is placed (Go's crypto/x509 looks there
// first on Linux).
const CertFile = "/etc/ssl/certs/ca-certificates.crt"

// epoch is the fixed timestamp of every file and of the image config, so the
// same inputs give the same digest.
var epoch = time.Unix(0, 0).UTC()

// Platforms are the platforms ko builds for.
func Platforms() []v1.Platform {
	return []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}
}

// Index returns an OCI image index with one image per platform, each made of
// the single base layer (identical for every platform: it holds no binaries).
// caBundle is the PEM CA bundle to ship; it must not be empty.
func Index(caBundle []byte, platforms []v1.Platform) (v1.ImageIndex, error) {
	if !bytes.Contains(caBundle, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("build base image: the CA bundle holds no PEM certificate")
	}
	if len(platforms) == 0 {
		return nil, fmt.Errorf("build base image: no platform given")
	}
	layerTar, err := rootfs(caBundle)
	if err != nil {
		return nil, fmt.Errorf("build base image layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("build base image layer: %w", err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img, err := image(layer, p)
		if err != nil {
			return nil, fmt.Errorf("build base image for %s/%s: %w", p.OS, p.Architecture, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	return idx, nil
}

func image(layer v1.Layer, p v1.Platform) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "portbridge deploy/cmd/image: passwd, group, CA certificates", Comment: "base layer"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: epoch}
	cf.Config.User = fmt.Sprintf("%d:%d", UID, GID)
	cf.Config.WorkingDir = "/home/nonroot"
	cf.Config.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"SSL_CERT_FILE=" + CertFile,
		"HOME=/home/nonroot",
	}
	return mutate.ConfigFile(img, cf)
}

// entry is one file or directory of the layer.
type entry struct {
	name     string
	mode     int64
	uid, gid int
	body     []byte
	dir      bool
}

func rootfs(caBundle []byte) ([]byte, error) {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, GID)
	group := fmt.Sprintf("root:x:0:\nnobody:x:65534:\nnonroot:x:%d:\n", GID)
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		{name: "etc/nsswitch.conf", mode: 0o644, body: []byte("hosts: files dns\n")},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: CertFile[1:], mode: 0o644, body: caBundle},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, uid: UID, gid: GID, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: "var/", mode: 0o755, dir: true},
		{name: "var/lib/", mode: 0o755, dir: true},
		{name: StateDir[1:] + "/", mode: 0o700, uid: UID, gid: GID, dir: true},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: epoch, Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("write %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("write %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
