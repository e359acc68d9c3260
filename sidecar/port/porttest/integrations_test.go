package porttest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// adminDo sends an admin request over HTTP and decodes the answer.
func adminDo(t *testing.T, srv *httptest.Server, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s %s: %q", method, path, data)
	}
	return resp.StatusCode, out
}

// TestIntegrationAdminAndBookkeeping drives an integration the way Port's
// UI and an integration do, and reads everything back through the admin
// API and the Go methods.
func TestIntegrationAdminAndBookkeeping(t *testing.T) {
	t.Parallel()
	e := contractFixture(t)
	tok := token(t, e)
	srv := httptest.NewServer(e)
	defer srv.Close()

	// No request yet; the UI's resync button makes one.
	if st, out, _ := do(t, e, tok, "GET", "/v1/integration/int1/resync-request", ""); st != 200 || out["request"] != nil {
		t.Fatalf("resync request before any: %d %v", st, out)
	}
	st, out := adminDo(t, srv, "POST", "/_emulator/integrations/int1/resync", "")
	first, _ := out["request"].(map[string]any)
	if st != 200 || first["id"] == "" {
		t.Fatalf("admin resync: %d %v", st, out)
	}
	_, out, _ = do(t, e, tok, "GET", "/v1/integration/int1/resync-request", "")
	got := out["request"].(map[string]any)
	if got["id"] != first["id"] {
		t.Fatalf("resync-request %v, want the admin's %v", got, first)
	}
	// Editing the mapping as the UI does makes a newer one.
	st, out = adminDo(t, srv, "PUT", "/_emulator/integrations/int1/config", `{"resources":[]}`)
	second, _ := out["request"].(map[string]any)
	if st != 200 || second["id"] == first["id"] {
		t.Fatalf("admin config edit: %d %v", st, out)
	}
	t1, _ := time.Parse(time.RFC3339Nano, first["updatedAt"].(string))
	t2, _ := time.Parse(time.RFC3339Nano, second["updatedAt"].(string))
	if !t2.After(t1) {
		t.Fatalf("the second request (%v) is not newer than the first (%v)", t2, t1)
	}
	if st, _ := adminDo(t, srv, "PUT", "/_emulator/integrations/int1/config", `{"resources":"all"}`); st != 422 {
		t.Fatalf("a bad config through the admin route: %d", st)
	}
	if st, _ := adminDo(t, srv, "POST", "/_emulator/integrations/ghost/resync", ""); st != 404 {
		t.Fatalf("resync of an unknown integration: %d", st)
	}

	// An integration reports its resync state twice and posts examples.
	for _, s := range []string{`{"status":"running","lastResyncStart":"2026-01-01T10:00:00Z","lastResyncEnd":null,"nextResync":null,"intervalInMinuets":60}`,
		`{"status":"completed","lastResyncEnd":"2026-01-01T10:01:00Z"}`} {
		if st, out, _ := do(t, e, tok, "PATCH", "/v1/integration/int1/resync-state", s); st != 200 {
			t.Fatalf("resync-state: %d %v", st, out)
		}
	}
	if st, out, _ := do(t, e, tok, "POST", "/v1/integration/int1/kinds/component/examples", `{"examples":[{"a":1},{"a":2}]}`); st != 200 {
		t.Fatalf("examples: %d %v", st, out)
	}
	// Its logs reach the sink its logAttributes name.
	_, out, _ = do(t, e, tok, "GET", "/v1/integration/int1", "")
	ingest := out["integration"].(map[string]any)["logAttributes"].(map[string]any)["ingestUrl"].(string)
	path := ingest[strings.Index(ingest, "/_emulator/"):]
	if st, out := adminDo(t, srv, "POST", path, `{"logs":[{"level":"INFO","message":"hello"}]}`); st != 200 {
		t.Fatalf("log sink: %d %v", st, out)
	}

	rec, ok := e.Integration("int1")
	if !ok {
		t.Fatal("int1 missing")
	}
	if len(rec.ResyncStateHistory) != 2 || rec.ResyncStateHistory[0]["status"] != "running" || rec.ResyncState["status"] != "completed" ||
		rec.ResyncState["lastResyncStart"] != "2026-01-01T10:00:00Z" || rec.ResyncState["updatedAt"] == nil {
		t.Fatalf("resync state %v, history %v", rec.ResyncState, rec.ResyncStateHistory)
	}
	if len(rec.ResyncRequests) != 2 || rec.ResyncRequests[1].Reason != "config" || len(rec.Examples["component"]) != 2 ||
		rec.ExamplePosts["component"] != 1 || len(rec.Logs) != 1 {
		t.Fatalf("bookkeeping %+v", rec)
	}
	// The same through the admin API and the dump.
	st, out = adminDo(t, srv, "GET", "/_emulator/integrations/int1", "")
	if hist, _ := out["integration"].(map[string]any)["resyncStateHistory"].([]any); st != 200 || len(hist) != 2 {
		t.Fatalf("admin integration: %d %v", st, out)
	}
	st, out = adminDo(t, srv, "GET", "/_emulator/dump", "")
	if ints, _ := out["integrations"].(map[string]any); st != 200 || ints["int1"] == nil {
		t.Fatalf("dump without integrations: %v", out)
	}
	_, out, _ = do(t, e, tok, "GET", "/v1/integration/int1/logs?limit=5", "")
	if logs := out["data"].(map[string]any)["logs"].([]any); len(logs) != 1 {
		t.Fatalf("logs %v", out)
	}
	// A resync-state update moves the integration's updatedAt with it, so
	// an integration can tell its own state updates from other changes.
	_, out, _ = do(t, e, tok, "PATCH", "/v1/integration/int1/resync-state", `{"status":"running"}`)
	in := out["integration"].(map[string]any)
	if in["updatedAt"] != in["resyncState"].(map[string]any)["updatedAt"] {
		t.Fatalf("updatedAt %v, resyncState.updatedAt %v", in["updatedAt"], in["resyncState"])
	}
}

func TestIntegrationsPersist(t *testing.T) {
	t.Parallel()
	file := t.TempDir() + "/state.json"
	e := New(Options{PersistFile: file})
	if err := e.PutIntegration(map[string]any{"installationId": "p1", "version": "1", "config": map[string]any{"resources": []any{}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.RequestResync("p1"); err != nil {
		t.Fatal(err)
	}
	if err := e.PutIntegration(map[string]any{"installationId": "p2", "config": map[string]any{"resources": "x"}}); err == nil {
		t.Fatal("a bad config was stored")
	}
	if err := e.Save(); err != nil {
		t.Fatal(err)
	}
	e2, err := Open(Options{PersistFile: file})
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := e2.Integration("p1")
	if !ok || rec.Version != "1" || len(rec.ResyncRequests) != 1 {
		t.Fatalf("not restored: %+v", rec)
	}
}

func TestRateLimitBuckets(t *testing.T) {
	t.Parallel()
	e := contractFixture(t)
	tok := token(t, e)
	e.ResetRequests()
	e.SetBucketBudget(BucketOther, 2, time.Hour)
	// The other bucket runs out; entity routes keep working.
	for i, want := range []int{200, 200, 429} {
		if st, _, _ := do(t, e, tok, "GET", "/v1/integration/int1", ""); st != want {
			t.Fatalf("integration request %d: %d, want %d", i, st, want)
		}
	}
	st, _, h := do(t, e, tok, "GET", "/v1/blueprints/service/entities/svc1", "")
	if st != 200 || h.Get("X-Ratelimit-Limit") == "2" {
		t.Fatalf("entity route: %d, limit %s", st, h.Get("X-Ratelimit-Limit"))
	}
	c := e.Requests()
	if c.ByBucket[BucketOther] != 3 || c.ByBucket[BucketEntities] != 1 {
		t.Fatalf("buckets %v", c.ByBucket)
	}
	e.UsePortRateLimits()
	_, _, h = do(t, e, tok, "POST", "/v1/blueprints/service/entities/search", "{}")
	if h.Get("X-Ratelimit-Limit") != "35000" || h.Get("X-Ratelimit-Period") != "300" {
		t.Fatalf("entities bucket headers %v", h)
	}
	_, _, h = do(t, e, tok, "GET", "/v1/blueprints", "")
	if h.Get("X-Ratelimit-Limit") != "15000" {
		t.Fatalf("other bucket headers %v", h)
	}
	srv := httptest.NewServer(e)
	defer srv.Close()
	if st, _ := adminDo(t, srv, "PUT", "/_emulator/rate-budget", `{"limit":5,"period":"1s","bucket":"teams"}`); st != 422 {
		t.Fatalf("unknown bucket: %d", st)
	}
	if st, _ := adminDo(t, srv, "PUT", "/_emulator/rate-budget", `{"limit":5,"period":"1s","bucket":"entities"}`); st != 200 {
		t.Fatalf("entities bucket: %d", st)
	}
}
