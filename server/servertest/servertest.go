// Package servertest provides what tests of the API server and of its
// clients need: an in-memory Backend that records what it is given and fails
// on request, and a self-signed TLS certificate. It does not import the
// server package, so the server's own tests can use it.
package servertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
)

// Backend is an in-memory server.Backend. Set its exported fields before
// the server uses it; read what it stored with its methods.
type Backend struct {
	// PublishErrs are returned by successive Publish calls (a nil entry is a
	// success); once used up, Publish succeeds.
	PublishErrs []error
	// ReadyErr is returned by Ready.
	ReadyErr error
	// StatusErr is returned by Status.
	StatusErr error
	// PreviewErr is returned by PreviewMapping.
	PreviewErr error
	// BeforePublish, if set, is called at the start of every Publish, outside
	// the Backend's lock; a test can block in it to hold a call in flight.
	BeforePublish func(ctx context.Context)

	mu        sync.Mutex
	calls     int
	batches   [][]*portbridgev1.Change
	snapshots []bool
	sources   []string
	resyncs   int
}

// Publish records the batch, or returns the next of PublishErrs.
func (b *Backend) Publish(ctx context.Context, changes []*portbridgev1.Change, fullSnapshot bool, source string) (uint64, error) {
	if b.BeforePublish != nil {
		b.BeforePublish(ctx)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	if len(b.PublishErrs) > 0 {
		err := b.PublishErrs[0]
		b.PublishErrs = b.PublishErrs[1:]
		if err != nil {
			return 0, err
		}
	}
	b.batches = append(b.batches, changes)
	b.snapshots = append(b.snapshots, fullSnapshot)
	b.sources = append(b.sources, source)
	return b.depth(), nil
}

func (b *Backend) depth() uint64 {
	var n uint64
	for _, batch := range b.batches {
		n += uint64(len(batch))
	}
	return n
}

// TriggerResync returns the id "resync-<reason>"; every call after the
// first reports that a resync is already running.
func (b *Backend) TriggerResync(_ context.Context, reason string, _ bool) (string, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.resyncs++
	return "resync-" + reason, b.resyncs > 1, nil
}

// Status reports the number of stored changes as the queue depth, or
// StatusErr.
func (b *Backend) Status(context.Context) (*portbridgev1.GetStatusResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.StatusErr != nil {
		return nil, b.StatusErr
	}
	return &portbridgev1.GetStatusResponse{Queue: &portbridgev1.QueueStatus{Depth: b.depth()}}, nil
}

// PreviewMapping returns PreviewErr, or one "service" entity whose
// identifier is the entity's metadata.name.
func (b *Backend) PreviewMapping(_ context.Context, entity map[string]any, _ string) (*portbridgev1.PreviewMappingResponse, error) {
	if b.PreviewErr != nil {
		return nil, b.PreviewErr
	}
	meta, _ := entity["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	return &portbridgev1.PreviewMappingResponse{Entities: []*portbridgev1.MappedEntity{{Blueprint: "service", Identifier: name}}}, nil
}

// Ready returns ReadyErr.
func (b *Backend) Ready(context.Context) error { return b.ReadyErr }

// Batches returns the stored batches in order.
func (b *Backend) Batches() [][]*portbridgev1.Change {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]*portbridgev1.Change(nil), b.batches...)
}

// Snapshots returns the full_snapshot flag of each stored batch.
func (b *Backend) Snapshots() []bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]bool(nil), b.snapshots...)
}

// Sources returns the source of each stored batch.
func (b *Backend) Sources() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.sources...)
}

// Resyncs counts TriggerResync calls.
func (b *Backend) Resyncs() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.resyncs
}

// PublishCalls counts Publish calls, failed ones included.
func (b *Backend) PublishCalls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

// SelfSignedTLS writes a one-hour certificate for 127.0.0.1 and localhost
// and its key into a temporary directory, and returns their paths and a pool
// that trusts the certificate.
func SelfSignedTLS(t testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	certPEM, keyPEM, cert, err := selfSigned()
	if err != nil {
		t.Fatalf("self-signed certificate: %v", err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func selfSigned() (certPEM, keyPEM []byte, cert *x509.Certificate, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "portbridge-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), cert, nil
}
