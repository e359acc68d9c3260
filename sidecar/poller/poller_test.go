package poller_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"sort"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/portbridge/portbridge/client"
	"github.com/portbridge/portbridge/server"
	"github.com/portbridge/portbridge/server/servertest"
	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/poller"
)

// peers starts the catalog emulator and the real server (with its recording
// backend) and returns a catalog client and a sidecar client for them.
func peers(t *testing.T, cat *catalogtest.Emulator) (*servertest.Backend, *catalog.Client, *client.Client) {
	t.Helper()
	catSrv := httptest.NewServer(cat)
	t.Cleanup(catSrv.Close)
	backend := &servertest.Backend{}
	srv, err := server.New(server.Config{Token: "sidecar-token"}, backend)
	if err != nil {
		t.Fatal(err)
	}
	sideSrv := httptest.NewServer(srv.Handler())
	t.Cleanup(sideSrv.Close)
	cc, err := catalog.New(catalog.Config{BaseURL: catSrv.URL, Token: "catalog-token-123"})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(sideSrv.URL, "sidecar-token", client.WithRetry(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return backend, cc, cl
}

// The poller against the catalog emulator and the real server (with its
// recording test backend): what the Backstage module does, in Go.
func TestPoll(t *testing.T) {
	t.Parallel()
	cat := catalogtest.New(catalogtest.Options{Token: "catalog-token-123", Seed: 9})
	if err := cat.UpsertAll(catalogtest.Generate(30, 9)); err != nil {
		t.Fatal(err)
	}
	backend, cc, cl := peers(t, cat)
	p := poller.New(cc, cl, poller.Options{BatchSize: 7})
	ctx := context.Background()

	n, err := p.Poll(ctx)
	if err != nil || n != 30 {
		t.Fatalf("first poll: %d, %v", n, err)
	}
	if got := backend.Snapshots(); len(got) != 5 || !got[4] || slices.Contains(got[:4], true) { // 30 changes in batches of 7
		t.Fatalf("first poll's batches carry full_snapshot %v; want 5 batches, the last one flagged", got)
	}
	if got := cat.Requests()["by-refs"]; got != 1 {
		t.Errorf("first poll read bodies in %d by-refs requests, want 1", got)
	}

	// One changed, one deleted, one added.
	refs := cat.Refs()
	ent, _ := cat.Get(refs[0])
	ent["metadata"].(map[string]any)["description"] = "changed"
	if err := cat.Upsert(ent); err != nil {
		t.Fatal(err)
	}
	if err := cat.Delete(refs[1]); err != nil {
		t.Fatal(err)
	}
	if err := cat.Upsert(catalog.Entity{"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
		"metadata": map[string]any{"name": "newcomer"}, "spec": map[string]any{"type": "service", "lifecycle": "production", "owner": "team-a"}}); err != nil {
		t.Fatal(err)
	}
	before := len(backend.Batches())
	if n, err = p.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	batches := backend.Batches()[before:]
	var kinds []string
	for _, b := range batches {
		for _, c := range b {
			switch {
			case c.GetDeleted() != nil:
				kinds = append(kinds, "deleted "+c.GetEntityRef())
			default:
				kinds = append(kinds, "upserted "+c.GetEntityRef())
			}
		}
	}
	sort.Strings(kinds)
	// Relations of peers of the changed entities may change their etags too,
	// so at least these three must be there.
	want := map[string]bool{"upserted " + refs[0]: false, "deleted " + refs[1]: false, "upserted component:default/newcomer": false}
	for _, k := range kinds {
		if _, ok := want[k]; ok {
			want[k] = true
		}
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("second poll did not publish %q (published %v)", k, kinds)
		}
	}
	if n != len(kinds) {
		t.Errorf("Poll returned %d, published %d", n, len(kinds))
	}

	// Nothing changed: nothing published, no body read, one cheap listing.
	cat.ResetRequests()
	if n, err = p.Poll(ctx); err != nil || n != 0 {
		t.Fatalf("idle poll: %d, %v", n, err)
	}
	if got := cat.Requests(); got["by-refs"] != 0 || got["by-query"] != 1 {
		t.Errorf("idle poll requests: %v", got)
	}

	// The sidecar refuses: the view is kept, and the change is sent again.
	ent["metadata"].(map[string]any)["description"] = "changed again"
	if err := cat.Upsert(ent); err != nil {
		t.Fatal(err)
	}
	backend.PublishErrs = []error{connect.NewError(connect.CodeUnavailable, errors.New("down"))}
	if _, err := p.Poll(ctx); err == nil {
		t.Fatal("poll succeeded although the sidecar refused")
	}
	if n, err = p.Poll(ctx); err != nil || n == 0 {
		t.Fatalf("retry poll: %d, %v", n, err)
	}
}

// TestEmptyCatalogAsksForResync: with nothing to publish, the first poll
// asks the sidecar for the reconciliation a snapshot batch would carry.
func TestEmptyCatalogAsksForResync(t *testing.T) {
	t.Parallel()
	cat := catalogtest.New(catalogtest.Options{Token: "catalog-token-123"})
	backend, cc, cl := peers(t, cat)
	p := poller.New(cc, cl, poller.Options{})
	for range 2 {
		if n, err := p.Poll(context.Background()); err != nil || n != 0 {
			t.Fatalf("poll of an empty catalog: %d, %v", n, err)
		}
	}
	if got := backend.Resyncs(); got != 1 {
		t.Errorf("%d resyncs requested, want 1 (the first poll only)", got)
	}
	// a catalog that cannot be listed fails the poll
	cat.FailAfter(0, 500)
	if _, err := p.Poll(context.Background()); err == nil {
		t.Errorf("a failing listing passed")
	}
}

func TestPacing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		busy           float64
		interval, took time.Duration
		want           time.Duration
	}{
		{0, time.Second, 10 * time.Millisecond, 990 * time.Millisecond},     // fast poll: the interval
		{0, time.Second, 200 * time.Millisecond, 9800 * time.Millisecond},   // slow poll: 2 % busy
		{0.1, time.Second, 500 * time.Millisecond, 4500 * time.Millisecond}, // 10 % busy
		{1, time.Second, 3 * time.Second, 0},                                // pacing off, poll longer than the interval
	} {
		p := poller.New(nil, nil, poller.Options{MaxBusy: tc.busy})
		if got := poller.Wait(p, tc.interval, tc.took); got != tc.want {
			t.Errorf("MaxBusy %v, interval %v, poll took %v: wait %v, want %v", tc.busy, tc.interval, tc.took, got, tc.want)
		}
	}
}

// TestBaseline: the first poll records the catalog and asks for a resync
// instead of publishing it; later polls publish changes as usual.
func TestBaseline(t *testing.T) {
	t.Parallel()
	cat := catalogtest.New(catalogtest.Options{Token: "catalog-token-123", Seed: 3})
	if err := cat.AddGenerated(40, 3); err != nil {
		t.Fatal(err)
	}
	backend, cc, cl := peers(t, cat)
	p := poller.New(cc, cl, poller.Options{Baseline: true})
	if n, err := p.Poll(context.Background()); err != nil || n != 0 || backend.Resyncs() != 1 || len(backend.Batches()) != 0 || cat.Requests()["by-refs"] != 0 {
		t.Fatalf("baseline poll: %d changes, %v; %d resyncs, %d batches, %d by-refs", n, err, backend.Resyncs(), len(backend.Batches()), cat.Requests()["by-refs"])
	}
	refs := cat.Refs()
	if err := cat.Delete(refs[3]); err != nil {
		t.Fatal(err)
	}
	n, err := p.Poll(context.Background())
	if err != nil || n == 0 || backend.Resyncs() != 1 {
		t.Fatalf("poll after a delete: %d, %v, %d resyncs", n, err, backend.Resyncs())
	}
	found := false
	for _, b := range backend.Batches() {
		for _, c := range b {
			found = found || (c.GetDeleted() != nil && c.GetEntityRef() == refs[3])
		}
	}
	if !found {
		t.Errorf("the deletion of %s was not published", refs[3])
	}
}
