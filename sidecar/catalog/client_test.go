package catalog_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/limits"
)

const token = "client-test-token-123456"

func start(t testing.TB, n int) (*catalogtest.Emulator, string) {
	t.Helper()
	emu := catalogtest.New(catalogtest.Options{Token: token, Seed: 1})
	if err := emu.UpsertAll(catalogtest.Generate(n, 1)); err != nil {
		t.Fatal(err)
	}
	return emu, serveEmu(t, emu)
}

func serveEmu(t testing.TB, emu *catalogtest.Emulator) string {
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return srv.URL
}

func client(t testing.TB, url, tok string, pageSize int) *catalog.Client {
	t.Helper()
	c, err := catalog.New(catalog.Config{BaseURL: url, Token: tok, PageSize: pageSize, Retries: 3, RetryWait: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func count(t *testing.T, c *catalog.Client, q catalog.Query) (int, error) {
	n := 0
	for e, err := range c.Entities(context.Background(), q) {
		if err != nil {
			if e != nil {
				t.Errorf("error yielded with an entity")
			}
			return n, err
		}
		n++
	}
	return n, nil
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []catalog.Config{
		{BaseURL: ""}, {BaseURL: "localhost:7007"}, {BaseURL: "ftp://x"}, {BaseURL: "http://x?y=1"},
		{BaseURL: "http://x", Token: "has space"}, {BaseURL: "http://x", PageSize: -1},
	} {
		if _, err := catalog.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestScanPagesAndRequestCount(t *testing.T) {
	t.Parallel()
	emu, url := start(t, 1234)
	n, err := count(t, client(t, url, token, 100), catalog.Query{})
	if err != nil || n != 1234 {
		t.Fatalf("scan = %d, %v", n, err)
	}
	if got := emu.Requests()["by-query"]; got != 13 {
		t.Errorf("by-query requests = %d, want ceil(1234/100) = 13", got)
	}
}

func TestBadInputs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(*catalogtest.Emulator)
		tok   string
		check func(t *testing.T, n int, err error)
	}{
		{"wrong token names the URL, not the token", nil, "wrong-token-abcdefgh", func(t *testing.T, n int, err error) {
			if !catalog.IsUnauthorized(err) || !strings.Contains(err.Error(), "/api/catalog/entities/by-query") ||
				strings.Contains(err.Error(), "wrong-token") || !strings.Contains(err.Error(), "Illegal token") {
				t.Errorf("err = %v", err)
			}
		}},
		{"missing token", nil, "", func(t *testing.T, n int, err error) {
			if !catalog.IsUnauthorized(err) || !strings.Contains(err.Error(), "Missing credentials") {
				t.Errorf("err = %v", err)
			}
		}},
		{"catalog dies mid-scan", func(e *catalogtest.Emulator) { e.FailAfter(2, 500) }, token, func(t *testing.T, n int, err error) {
			var ae *catalog.APIError
			if !errors.As(err, &ae) || ae.StatusCode != 500 || n != 20 {
				t.Errorf("n = %d, err = %v", n, err)
			}
		}},
		{"catalog stops mid-scan (503 after retries)", func(e *catalogtest.Emulator) { e.FailAfter(1, 503) }, token, func(t *testing.T, n int, err error) {
			if !catalog.IsNotReady(err) || n != 10 {
				t.Errorf("n = %d, err = %v", n, err)
			}
		}},
		{"answer cut short", func(e *catalogtest.Emulator) { e.GarbleAfter(1, `{"items":[{"kind":"Comp`) }, token, func(t *testing.T, n int, err error) {
			if err == nil || n != 10 {
				t.Errorf("n = %d, err = %v", n, err)
			}
		}},
		{"malformed page", func(e *catalogtest.Emulator) { e.GarbleAfter(1, `{"items":"nope","totalItems":3,"pageInfo":{}}`) }, token, func(t *testing.T, n int, err error) {
			var me *catalog.MalformedResponseError
			if !errors.As(err, &me) || n != 10 {
				t.Errorf("n = %d, err = %v", n, err)
			}
		}},
		{"page without items", func(e *catalogtest.Emulator) { e.GarbleAfter(1, `{"totalItems":3,"pageInfo":{}}`) }, token, func(t *testing.T, n int, err error) {
			var me *catalog.MalformedResponseError
			if !errors.As(err, &me) || n != 10 {
				t.Errorf("n = %d, err = %v", n, err)
			}
		}},
		{"entity without metadata.name", func(e *catalogtest.Emulator) {
			e.GarbleAfter(1, `{"items":[{"apiVersion":"backstage.io/v1alpha1","kind":"Component","metadata":{"uid":"u1"}}],"totalItems":3,"pageInfo":{}}`)
		}, token, func(t *testing.T, n int, err error) {
			var me *catalog.MalformedResponseError
			if !errors.As(err, &me) || !strings.Contains(err.Error(), "metadata.name") || !strings.Contains(err.Error(), "u1") || n != 10 {
				t.Errorf("n = %d, err = %v", n, err)
			}
		}},
		{"empty page with a next cursor", func(e *catalogtest.Emulator) {
			e.GarbleAfter(0, `{"items":[],"totalItems":3,"pageInfo":{"nextCursor":"x"}}`)
		}, token, func(t *testing.T, n int, err error) {
			var me *catalog.MalformedResponseError
			if !errors.As(err, &me) {
				t.Errorf("n = %d, err = %v", n, err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			emu, url := start(t, 35)
			if tc.setup != nil {
				tc.setup(emu)
			}
			n, err := count(t, client(t, url, tc.tok, 10), catalog.Query{})
			if err == nil {
				t.Fatalf("scan of %d entities ended as complete", n)
			}
			tc.check(t, n, err)
		})
	}
}

func TestRetriesWhileStarting(t *testing.T) {
	t.Parallel()
	for _, status := range []int{503, 404} {
		emu, url := start(t, 5)
		emu.SetUnavailable(status)
		c, err := catalog.New(catalog.Config{BaseURL: url, Token: token, Retries: 50, RetryWait: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Ping(context.Background()); !catalog.IsNotReady(err) {
			t.Fatalf("status %d: Ping = %v, want not ready", status, err)
		}
		done := make(chan error, 1)
		go func() { _, err := c.Count(context.Background()); done <- err }()
		for emu.Requests()["by-query"] < 3 {
			runtime.Gosched()
		}
		emu.SetUnavailable(0)
		if err := <-done; err != nil {
			t.Fatalf("status %d: Count after start = %v", status, err)
		}
	}
}

func TestSingleReads(t *testing.T) {
	t.Parallel()
	_, url := start(t, 200)
	ctx := context.Background()
	c := client(t, url, token, 50)
	e, err := c.EntityByRef(ctx, catalog.Ref{Kind: "group", Name: "group-000001"})
	if err != nil {
		t.Fatal(err)
	}
	uid := e["metadata"].(map[string]any)["uid"].(string)
	if got, err := c.EntityByUID(ctx, uid); err != nil || got["metadata"].(map[string]any)["name"] != "group-000001" {
		t.Fatalf("by-uid = %v, %v", got, err)
	}
	if _, err := c.EntityByRef(ctx, catalog.Ref{Kind: "group", Namespace: "default", Name: "nope"}); !catalog.IsNotFound(err) {
		t.Errorf("missing by-name: %v", err)
	}
	if _, err := c.EntityByUID(ctx, ""); err == nil {
		t.Errorf("empty uid accepted")
	}
	if _, err := c.EntitiesByRefs(ctx, []string{"no-kind"}, nil); err == nil {
		t.Errorf("ref without kind accepted")
	}
	refs := make([]string, 0, 450)
	for i := range 450 {
		refs = append(refs, "User:user-0000"+string(rune('0'+i%10))+string(rune('0'+i/10%10)))
	}
	refs[7] = "component:default/missing"
	got, err := c.EntitiesByRefs(ctx, refs, []string{"metadata.name"})
	if err != nil || len(got) != len(refs) || got[7] != nil || got[0] == nil {
		t.Fatalf("by-refs over chunks = %d items, %v", len(got), err)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	_, url := start(t, 30)
	reg := prometheus.NewRegistry()
	for range 2 { // a second client on the same registry shares the collectors
		c, err := catalog.New(catalog.Config{BaseURL: url, Token: token, PageSize: 10, Metrics: reg})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := count(t, c, catalog.Query{}); err != nil || n != 30 {
			t.Fatal(n, err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() == "portbridge_catalog_requests_total" {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	if total != 6 {
		t.Errorf("counted %v requests, want 6 (2 scans of 3 pages)", total)
	}
}

// TestStreamMemoryIsFlat streams 100k emulated entities and checks the
// live heap stays far below the size of the catalog.
func TestStreamMemoryIsFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("100k entities")
	}
	_, url := start(t, 100_000)
	c := client(t, url, token, 500)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak uint64
	n := 0
	for _, err := range c.Entities(context.Background(), catalog.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n%5000 == 0 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	if n != 100_000 {
		t.Fatalf("streamed %d", n)
	}
	growth := int64(peak) - int64(before.HeapAlloc)
	t.Logf("heap before %d MiB, peak while streaming %d MiB (growth %d MiB)", before.HeapAlloc>>20, peak>>20, growth>>20)
	// the emulator holds ~100k encoded entities; a client that kept them
	// decoded would add several hundred MiB
	if growth > 64<<20 {
		t.Errorf("heap grew by %d MiB while streaming", growth>>20)
	}
}

// BenchmarkStream100k reports bytes allocated per streamed entity and the
// peak heap of a full scan of 100k emulated entities.
func BenchmarkStream100k(b *testing.B) {
	_, url := start(b, 100_000)
	c := client(b, url, token, 500)
	b.ReportAllocs()
	var peak uint64
	for b.Loop() {
		n := 0
		for _, err := range c.Entities(context.Background(), catalog.Query{}) {
			if err != nil {
				b.Fatal(err)
			}
			n++
			if n%10000 == 0 {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
		}
	}
	b.ReportMetric(float64(peak>>20), "peak-heap-MiB")
	b.ReportMetric(0, "ns/op")
}

// Entities over the input limits are skipped with their ref and reason
// logged, counted and reported; the scan goes on and ends with a
// LimitError, so a skipped entity never looks deleted.
func TestEntitiesOverLimits(t *testing.T) {
	t.Parallel()
	emu, url := start(t, 30)
	var deep any = "bottom"
	for range 40 {
		deep = map[string]any{"x": deep}
	}
	big := catalog.Entity{"apiVersion": "backstage.io/v1alpha1", "kind": "Component", "metadata": map[string]any{"name": "too-long"},
		"spec": map[string]any{"type": "service", "owner": "a", "lifecycle": "production", "notes": strings.Repeat("n", 5000)}}
	nested := catalog.Entity{"apiVersion": "backstage.io/v1alpha1", "kind": "Component", "metadata": map[string]any{"name": "too-deep"},
		"spec": map[string]any{"type": "service", "owner": "a", "lifecycle": "production", "deep": deep}}
	if err := emu.Upsert(big, nested); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	reg := prometheus.NewRegistry()
	var skipped []string
	c, err := catalog.New(catalog.Config{BaseURL: url, Token: token, PageSize: 7, Metrics: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Limits: limits.Limits{MaxDepth: 20, MaxStringBytes: 4096},
		OnSkip: func(ref, reason string) { skipped = append(skipped, ref+": "+reason) }})
	if err != nil {
		t.Fatal(err)
	}
	n, err := count(t, c, catalog.Query{})
	var le *catalog.LimitError
	if !errors.As(err, &le) || le.Skipped != 2 {
		t.Fatalf("scan ended with %v, want a LimitError for 2 entities", err)
	}
	if want := emu.Len() - 2; n != want {
		t.Fatalf("scan yielded %d entities, want every other one (%d)", n, want)
	}
	if c.Skipped() != 2 || len(skipped) != 2 {
		t.Fatalf("Skipped() = %d, OnSkip got %v", c.Skipped(), skipped)
	}
	for _, want := range []string{"component:default/too-long", "limits.maxStringBytes", "component:default/too-deep", "limits.maxDepth"} {
		if !strings.Contains(strings.Join(skipped, "\n"), want) || !strings.Contains(logs.String(), want) {
			t.Errorf("%q missing from the skips %v or the log:\n%s", want, skipped, logs.String())
		}
	}
	if strings.Contains(logs.String(), strings.Repeat("n", 100)) {
		t.Errorf("the log quotes the whole value")
	}
	mfs, _ := reg.Gather()
	var metric float64
	for _, mf := range mfs {
		if mf.GetName() == "portbridge_catalog_entities_skipped_total" {
			for _, m := range mf.GetMetric() {
				metric += m.GetCounter().GetValue()
			}
		}
	}
	if metric != 2 {
		t.Errorf("skip metric = %v", metric)
	}
	// A read by ref returns the others and says which are over.
	got, err := c.EntitiesByRefs(context.Background(), []string{"component:default/too-long", emu.Refs()[0], "component:default/nope"}, nil)
	if !errors.As(err, &le) || len(got) != 3 || got[0] != nil || got[1] == nil || got[2] != nil || le.Refs[0] != "component:default/too-long" {
		t.Fatalf("EntitiesByRefs = %v, %v", got, err)
	}
	if _, err := c.EntityByRef(context.Background(), catalog.Ref{Kind: "component", Namespace: "default", Name: "too-deep"}); !errors.As(err, &le) {
		t.Fatalf("EntityByRef: %v", err)
	}
}
