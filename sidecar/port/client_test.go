package port_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

// env starts an emulator with the blueprints system and service (a
// single relation to system, a many relation to service) and returns a
// client for it.
func env(t testing.TB) (*porttest.Emulator, *port.Client) {
	t.Helper()
	emu := porttest.New(porttest.Options{})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	c, err := port.New(port.Config{BaseURL: srv.URL, ClientID: emu.ClientID(), ClientSecret: emu.ClientSecret(),
		Version: "1.2.3", IntegrationIdentifier: "abc", RetryBaseDelay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// service is listed first: it points at system, which does not exist yet.
	err = c.CreateBlueprints(context.Background(), []port.Blueprint{
		{Identifier: "service", Title: "Service", Schema: port.BlueprintSchema{Properties: map[string]port.Property{
			"port": {Type: "number"}, "blob": {Type: "string"},
		}}, Relations: map[string]port.Relation{"system": {Target: "system"}, "deps": {Target: "service", Many: true}}},
		{Identifier: "system", Title: "System", Schema: port.BlueprintSchema{Properties: map[string]port.Property{}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	emu.ResetRequests()
	return emu, c
}

func entities(n int, blob int) []port.Entity {
	out := make([]port.Entity, n)
	for i := range out {
		out[i] = port.Entity{Identifier: fmt.Sprintf("svc-%03d", i), Properties: map[string]any{"port": i}}
		if blob > 0 {
			out[i].Properties["blob"] = strings.Repeat("x", blob)
		}
	}
	return out
}

func checkAllOK(t *testing.T, res []port.BulkResult, n int) {
	t.Helper()
	if len(res) != n {
		t.Fatalf("%d results for %d entities", len(res), n)
	}
	for i, r := range res {
		if r.Err != nil || r.Index != i {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
}

const bulkRoute = "POST /v1/blueprints/{b}/entities/bulk"

func TestCreateBlueprintsAnyOrder(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	bp, err := c.GetBlueprint(context.Background(), "service")
	if err != nil || bp.Relations["system"].Target != "system" || !bp.Relations["deps"].Many {
		t.Fatalf("%+v %v", bp, err)
	}
	if _, ok := emu.Blueprint("system"); !ok {
		t.Fatal("system missing")
	}
	if _, err := c.GetBlueprint(context.Background(), "ghost"); !port.IsNotFound(err) {
		t.Fatalf("want not found, got %v", err)
	}
}

func TestTokenRefreshOn401(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	ctx := context.Background()
	if _, err := c.UpsertEntity(ctx, "system", port.Entity{Identifier: "a"}, port.UpsertOptions{}); err != nil {
		t.Fatal(err)
	}
	emu.ExpireTokens()
	if _, err := c.UpsertEntity(ctx, "system", port.Entity{Identifier: "b"}, port.UpsertOptions{}); err != nil {
		t.Fatal(err)
	}
	rc := emu.Requests()
	if rc.ByStatus[401] != 1 || rc.ByRoute["POST /v1/auth/access_token"] != 1 {
		t.Fatalf("want one 401 and one token refresh, got %+v", rc)
	}
	bad, _ := port.New(port.Config{BaseURL: "http://127.0.0.1:1", ClientID: "x", ClientSecret: "y", MaxRetries: -1})
	if err := bad.Authenticate(ctx); err == nil {
		t.Fatal("no error from an unreachable server")
	}
}

func TestBulk45EntitiesIsThreeRequests(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	res, err := c.BulkUpsert(context.Background(), "service", entities(45, 0), port.UpsertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkAllOK(t, res, 45)
	if n := emu.Requests().ByRoute[bulkRoute]; n != 3 {
		t.Fatalf("%d bulk requests, want 3", n)
	}
	if !res[0].Created || len(emu.Entities("service")) != 45 {
		t.Fatal("entities not created")
	}
	recs := emu.Records("service")
	if ds := recs[0].DataSources; len(ds) != 1 || ds[0] != "portbridge/backstage/1.2.3/abc/exporter" {
		t.Fatalf("data source %v", ds)
	}
}

func TestBulkSplitBySize(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	// 20 entities of ~100 KB: 2 MB in all, so the 20-entity rule alone
	// would send one request the server must refuse.
	res, err := c.BulkUpsert(context.Background(), "service", entities(20, 100_000), port.UpsertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkAllOK(t, res, 20)
	rc := emu.Requests()
	if rc.ByRoute[bulkRoute] != 2 || rc.ByStatus[413] != 0 {
		t.Fatalf("want 2 bulk requests and no 413, got %+v", rc)
	}
	bodies, _ := port.EncodeBulk("service", entities(20, 100_000))
	for _, b := range bodies {
		if len(b) > port.MaxBodyBytes {
			t.Fatalf("body of %d bytes", len(b))
		}
	}
	// One entity larger than a body is refused before sending.
	res, _ = c.BulkUpsert(context.Background(), "service", entities(1, port.MaxBodyBytes), port.UpsertOptions{})
	if !port.HasCode(res[0].Err, port.CodeEntityTooLarge) {
		t.Fatalf("want entity_too_large, got %v", res[0].Err)
	}
}

func Test207ReportsFailingEntitiesByIndex(t *testing.T) {
	t.Parallel()
	_, c := env(t)
	ents := entities(5, 0)
	ents[1].Properties["port"] = "eighty"
	ents[3].Relations = map[string]any{"system": "ghost"}
	res, err := c.BulkUpsert(context.Background(), "service", ents, port.UpsertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		switch i {
		case 1:
			if !port.IsSchemaMismatch(r.Err) || r.Identifier != "svc-001" {
				t.Errorf("index 1: %+v", r)
			}
		case 3:
			if !port.IsNotFound(r.Err) {
				t.Errorf("index 3: %+v", r)
			}
		default:
			if r.Err != nil {
				t.Errorf("index %d: %v", i, r.Err)
			}
		}
	}
}

func Test413SplitsAndRetries(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	emu.InjectFaults(porttest.FaultSpec{Status: 413, Count: 1, Route: bulkRoute})
	res, err := c.BulkUpsert(context.Background(), "service", entities(20, 0), port.UpsertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkAllOK(t, res, 20)
	if n := emu.Requests().ByRoute[bulkRoute]; n != 3 {
		t.Fatalf("%d bulk requests, want 3 (one refused, two halves)", n)
	}
}

func Test429RetryAfterWaits(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	emu.InjectFaults(porttest.FaultSpec{Status: 429, RetryAfter: time.Second, Count: 1})
	start := time.Now()
	if _, err := c.UpsertEntity(context.Background(), "system", port.Entity{Identifier: "x"}, port.UpsertOptions{}); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Fatalf("retried after %v, before Retry-After", waited)
	}
	if st := c.RateLimit(); st.Throttled != 1 || st.Retries != 1 {
		t.Fatalf("rate-limit state %+v", st)
	}
}

func TestRetries5xx(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	emu.InjectFaults(porttest.FaultSpec{Status: 503, Count: 2}, porttest.FaultSpec{Status: 502, Count: 1})
	if _, err := c.GetBlueprint(context.Background(), "system"); err != nil {
		t.Fatal(err)
	}
	emu.InjectFaults(porttest.FaultSpec{Status: 500, Count: 1})
	if _, err := c.GetBlueprint(context.Background(), "system"); port.StatusOf(err) != 500 || !port.IsRetryable(err) {
		t.Fatalf("500 is not retried by the client but reported retryable: %v", err)
	}
}

func TestBurstUnderRateBudget(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	emu.SetRateBudget(100, time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 500)
	for i := range 500 {
		wg.Go(func() {
			_, err := c.UpsertEntity(context.Background(), "system", port.Entity{Identifier: fmt.Sprintf("s%d", i)}, port.UpsertOptions{})
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if rc := emu.Requests(); rc.OverBudget != 0 || rc.Throttled != 0 {
		t.Fatalf("%d requests over budget, %d throttled", rc.OverBudget, rc.Throttled)
	}
	if len(emu.Entities("system")) != 500 {
		t.Fatal("entities missing")
	}
}

func TestIdentifiersRoundTrip(t *testing.T) {
	t.Parallel()
	_, c := env(t)
	ctx := context.Background()
	for _, id := range []string{"a/b", "a+b", "a:b", "x@y=z.w", `back\slash`} {
		if _, err := c.UpsertEntity(ctx, "system", port.Entity{Identifier: id}, port.UpsertOptions{}); err != nil {
			t.Fatalf("%q: %v", id, err)
		}
		got, err := c.GetEntity(ctx, "system", id)
		if err != nil || got.Identifier != id || got.Blueprint != "system" {
			t.Fatalf("%q: %+v %v", id, got, err)
		}
		if err := c.DeleteEntity(ctx, "system", id, false); err != nil {
			t.Fatalf("%q: %v", id, err)
		}
		if _, err := c.GetEntity(ctx, "system", id); !port.IsNotFound(err) {
			t.Fatalf("%q still there: %v", id, err)
		}
		if err := c.DeleteEntity(ctx, "system", id, false); err != nil {
			t.Fatalf("deleting %q again: %v", id, err)
		}
	}
}

func TestBadInputs(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	ctx := context.Background()
	_, err := c.UpsertEntity(ctx, "system", port.Entity{Identifier: "has space"}, port.UpsertOptions{})
	if !port.IsInvalidIdentifier(err) || !strings.Contains(err.Error(), "has space") {
		t.Fatalf("invalid identifier: %v", err)
	}
	res, err := c.BulkUpsert(ctx, "system", []port.Entity{{Identifier: "ok"}, {Identifier: ".."}, {Identifier: "x", Relations: map[string]any{"r": "bad id"}}}, port.UpsertOptions{})
	if err != nil || res[0].Err != nil || !port.IsInvalidIdentifier(res[1].Err) || !port.IsInvalidIdentifier(res[2].Err) {
		t.Fatalf("bulk invalid identifiers: %+v %v", res, err)
	}
	if !strings.Contains(res[2].Err.Error(), "relations.r") {
		t.Fatalf("the error does not name the field: %v", res[2].Err)
	}
	if _, err := c.UpsertEntity(ctx, "ghost", port.Entity{Identifier: "a"}, port.UpsertOptions{}); !port.IsNotFound(err) {
		t.Fatalf("unknown blueprint: %v", err)
	}
	res, _ = c.BulkUpsert(ctx, "ghost", entities(2, 0), port.UpsertOptions{})
	if !port.IsNotFound(res[0].Err) || !port.IsNotFound(res[1].Err) {
		t.Fatalf("bulk to unknown blueprint: %+v", res)
	}
	if _, err := c.UpsertEntity(ctx, "service", port.Entity{Identifier: "a", Properties: map[string]any{"port": true}}, port.UpsertOptions{}); !port.IsSchemaMismatch(err) {
		t.Fatalf("wrong type: %v", err)
	}
	rel := port.Entity{Identifier: "a", Relations: map[string]any{"system": "missing-sys"}}
	if _, err := c.UpsertEntity(ctx, "service", rel, port.UpsertOptions{}); !port.IsNotFound(err) {
		t.Fatalf("missing target: %v", err)
	}
	if _, err := c.UpsertEntity(ctx, "service", rel, port.UpsertOptions{CreateMissingRelatedEntities: true}); err != nil {
		t.Fatalf("missing target with create_missing_related_entities: %v", err)
	}
	if _, ok := emu.Entity("system", "missing-sys"); !ok {
		t.Fatal("the missing target was not created")
	}
	if err := c.DeleteBlueprint(ctx, "service"); !port.IsHasDependents(err) {
		t.Fatalf("deleting a blueprint with entities: %v", err)
	}
	if _, err := port.New(port.Config{BaseURL: "ftp://x", ClientID: "a", ClientSecret: "b"}); err == nil {
		t.Fatal("bad base URL accepted")
	}
}

func TestSearchAndBulkDelete(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	ctx := context.Background()
	ents := make([]port.Entity, 2100)
	ids := make([]string, len(ents))
	for i := range ents {
		ids[i] = fmt.Sprintf("e%04d", i)
		ents[i] = port.Entity{Identifier: ids[i]}
	}
	if _, err := c.BulkUpsert(ctx, "system", ents, port.UpsertOptions{}); err != nil {
		t.Fatal(err)
	}
	emu.ResetRequests()
	n := 0
	for e, err := range c.SearchEntities(ctx, "system", port.SearchRequest{}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Blueprint != "system" {
			t.Fatalf("entity without blueprint: %+v", e)
		}
		n++
	}
	if n != 2100 || emu.Requests().ByRoute["POST /v1/blueprints/{b}/entities/search"] != 3 {
		t.Fatalf("%d entities in %+v", n, emu.Requests().ByRoute)
	}
	deleted, err := c.BulkDelete(ctx, "system", append(ids[:150:150], "never-existed"), false)
	if err != nil || len(deleted) != 150 {
		t.Fatalf("deleted %d: %v", len(deleted), err)
	}
	if got := emu.Requests().ByRoute["POST /v1/blueprints/{b}/bulk/entities/delete"]; got != 2 {
		t.Fatalf("%d bulk deletes, want 2", got)
	}
	all, err := c.SearchAll(ctx, map[string]any{"combinator": "and", "rules": []any{
		map[string]any{"property": "$identifier", "operator": "=", "value": "e2000"}}})
	if err != nil || len(all) != 1 {
		t.Fatalf("search all: %v %v", all, err)
	}
	if cnt, err := c.CountEntities(ctx, "system"); err != nil || cnt != 1950 {
		t.Fatalf("count %d %v", cnt, err)
	}
}

// Issue 13: a Retry-After of an hour paused every Port request for an hour
// while status said "waited 0s". The pause is capped, and the state says
// until when, why, and how long callers have waited so far.
func TestRetryAfterIsCappedAndVisible(t *testing.T) {
	t.Parallel()
	for _, status := range []int{429, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			emu := porttest.New(porttest.Options{})
			srv := httptest.NewServer(emu)
			t.Cleanup(srv.Close)
			c, err := port.New(port.Config{BaseURL: srv.URL, ClientID: emu.ClientID(), ClientSecret: emu.ClientSecret(),
				RetryBaseDelay: 5 * time.Millisecond, MaxRetryAfter: 1500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Authenticate(context.Background()); err != nil {
				t.Fatal(err)
			}
			emu.InjectFaults(porttest.FaultSpec{Status: status, RetryAfter: time.Hour, Count: 1})
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				_, err := c.GetBlueprint(context.Background(), "nope")
				done <- err
			}()
			var during port.RateLimitState
			for {
				during = c.RateLimit()
				if during.Waiting > 0 && !during.WaitingUntil.IsZero() && during.TotalWait > 200*time.Millisecond {
					break
				}
				if time.Since(start) > 5*time.Second {
					t.Fatalf("never saw the wait in the state: %+v", during)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if d := time.Until(during.WaitingUntil); d > 1500*time.Millisecond || d < 0 {
				t.Errorf("waiting until %v from now, want within the 1.5 s cap", d)
			}
			if want := fmt.Sprintf("%d Retry-After 3600s, capped at 1.5s (port.maxRetryAfter)", status); during.WaitReason != want {
				t.Errorf("reason %q, want %q", during.WaitReason, want)
			}
			err = <-done
			if !port.IsNotFound(err) {
				t.Fatalf("after the pause: %v, want the real answer (404)", err)
			}
			took := time.Since(start)
			if took > 4*time.Second || took < 1400*time.Millisecond {
				t.Errorf("the request took %v; want about the 1.5 s cap", took)
			}
			after := c.RateLimit()
			if after.Waiting != 0 || after.Capped != 1 || after.TotalWait < 1400*time.Millisecond || !after.WaitingUntil.IsZero() {
				t.Errorf("state after %+v", after)
			}
		})
	}
}
