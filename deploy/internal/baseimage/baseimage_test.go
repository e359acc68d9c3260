package baseimage

import (
	"archive/tar"
	"errors"
	"io"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

func TestIndex(t *testing.T) {
	t.Parallel()
	idx, err := Index([]byte(pem), Platforms())
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := idx.MediaType(); mt != types.OCIImageIndex {
		t.Errorf("index media type %s, want %s", mt, types.OCIImageIndex)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("%d manifests, want 2", len(im.Manifests))
	}
	for i, d := range im.Manifests {
		want := Platforms()[i]
		if d.Platform == nil || d.Platform.OS != want.OS || d.Platform.Architecture != want.Architecture {
			t.Errorf("manifest %d platform %v, want %v", i, d.Platform, want)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Config.User != "65532:65532" || cf.Architecture != want.Architecture || cf.OS != "linux" {
			t.Errorf("config user %q arch %s os %s", cf.Config.User, cf.Architecture, cf.OS)
		}
		files := readFS(t, img)
		for path, check := range map[string]func(h *tar.Header, body string) bool{
			"etc/passwd":                        func(h *tar.Header, b string) bool { return strings.Contains(b, "nonroot:x:65532:65532:") },
			"etc/group":                         func(h *tar.Header, b string) bool { return strings.Contains(b, "nonroot:x:65532:") },
			"etc/ssl/certs/ca-certificates.crt": func(h *tar.Header, b string) bool { return b == pem },
			"var/lib/portbridge": func(h *tar.Header, b string) bool {
				return h.Uid == UID && h.Typeflag == tar.TypeDir && h.Mode == 0o700
			},
			"tmp": func(h *tar.Header, b string) bool { return h.Mode == 0o1777 },
		} {
			f, ok := files[path]
			if !ok || !check(f.h, f.body) {
				t.Errorf("%s: %s: missing or wrong (%+v)", want.Architecture, path, f.h)
			}
		}
	}
}

// TestReproducible: the same inputs give the same digest, so a rebuilt
// image only changes when the code does.
func TestReproducible(t *testing.T) {
	t.Parallel()
	digest := func() v1.Hash {
		idx, err := Index([]byte(pem), Platforms())
		if err != nil {
			t.Fatal(err)
		}
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if a, b := digest(), digest(); a != b {
		t.Errorf("two builds differ: %s, %s", a, b)
	}
}

func TestIndexErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		certs     string
		platforms []v1.Platform
		want      string
	}{
		{"empty bundle", "", Platforms(), "no PEM certificate"},
		{"not PEM", "hello", Platforms(), "no PEM certificate"},
		{"no platform", pem, nil, "no platform"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Index([]byte(tc.certs), tc.platforms)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

type file struct {
	h    *tar.Header
	body string
}

func readFS(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]file{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(h.Name, "/")] = file{h, string(b)}
	}
}
