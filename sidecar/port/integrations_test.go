package port_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/port"
)

func TestUserAgentFromConfig(t *testing.T) {
	t.Parallel()
	_, c := env(t)
	if ua := c.UserAgent(); ua != "portbridge/backstage/1.2.3/abc/exporter" {
		t.Fatalf("User-Agent %q", ua)
	}
	for _, tc := range []struct {
		cfg  port.Config
		want string
	}{
		{port.Config{}, "portbridge/backstage/dev/portbridge/exporter"},
		{port.Config{Version: "v1.0.0-3-gabc/dirty", IntegrationIdentifier: "prod_eu.1"}, "portbridge/backstage/v1.0.0-3-gabc-dirty/prod_eu.1/exporter"},
	} {
		tc.cfg.ClientID, tc.cfg.ClientSecret = "a", "b"
		c, err := port.New(tc.cfg)
		if err != nil || c.UserAgent() != tc.want {
			t.Errorf("%+v: %q %v, want %q", tc.cfg, c.UserAgent(), err, tc.want)
		}
	}
	for _, bad := range []string{"has space", "a/b", "-lead", strings.Repeat("x", 101), "ünï"} {
		if _, err := port.New(port.Config{ClientID: "a", ClientSecret: "b", IntegrationIdentifier: bad}); err == nil {
			t.Errorf("integration identifier %q accepted", bad)
		}
	}
}

func TestIntegrationRoundTrip(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	ctx := context.Background()
	cfg := map[string]any{"deleteDependentEntities": true, "resources": []any{map[string]any{"kind": "component",
		"selector": map[string]any{"query": "true"},
		"port":     map[string]any{"entity": map[string]any{"mappings": map[string]any{"identifier": ".metadata.name", "blueprint": `"service"`}}}}}}

	if _, err := c.GetIntegration(ctx, ""); !port.IsNotFound(err) {
		t.Fatalf("get before create: %v", err)
	}
	in, err := c.CreateIntegration(ctx, port.NewIntegration{Title: "Backstage", Config: cfg}, false)
	if err != nil {
		t.Fatal(err)
	}
	if in.Identifier != "abc" || in.InstallationAppType != "backstage" || in.Version != "1.2.3" || *in.Title != "Backstage" ||
		in.Config["deleteDependentEntities"] != true || in.LogAttributes == nil || in.LogAttributes.IngestURL == "" {
		t.Fatalf("created %+v", in)
	}
	if _, err := c.CreateIntegration(ctx, port.NewIntegration{}, false); !port.IsConflict(err) {
		t.Fatalf("second create: %v", err)
	}
	if in, err = c.CreateIntegration(ctx, port.NewIntegration{Version: "1.2.4"}, true); err != nil || in.Version != "1.2.4" {
		t.Fatalf("upsert: %+v %v", in, err)
	}

	// A plain patch asks for no resync; an empty one and a config change do.
	title := "Backstage EU"
	if in, err = c.PatchIntegration(ctx, "", port.IntegrationPatch{Title: &title, Version: "1.3.0"}); err != nil || *in.Title != title || in.Version != "1.3.0" {
		t.Fatalf("patch: %+v %v", in, err)
	}
	if rr, err := c.GetResyncRequest(ctx, ""); rr != nil || err != nil {
		t.Fatalf("resync request after a plain patch: %+v %v", rr, err)
	}
	if err := c.RequestResync(ctx, ""); err != nil {
		t.Fatal(err)
	}
	first, err := c.GetResyncRequest(ctx, "")
	if err != nil || first == nil || first.ID == "" {
		t.Fatalf("resync request: %+v %v", first, err)
	}
	cfg["deleteDependentEntities"] = false
	if in, err = c.PatchIntegrationConfig(ctx, "", cfg, false); err != nil || in.Config["deleteDependentEntities"] != false {
		t.Fatalf("patch config: %+v %v", in, err)
	}
	second, _ := c.GetResyncRequest(ctx, "")
	if second == nil || !second.UpdatedAt.After(first.UpdatedAt) {
		t.Fatalf("the config change made no newer request: %+v after %+v", second, first)
	}
	cfg["createMissingRelatedEntities"] = true
	if _, err := c.PatchIntegrationConfig(ctx, "", cfg, true); err != nil {
		t.Fatal(err)
	}
	if same, _ := c.GetResyncRequest(ctx, ""); same.ID != second.ID {
		t.Fatalf("skipResync still made a request: %+v", same)
	}
	// The UI's resync button.
	if _, err := emu.RequestResync("abc"); err != nil {
		t.Fatal(err)
	}
	if third, _ := c.GetResyncRequest(ctx, ""); !third.UpdatedAt.After(second.UpdatedAt) {
		t.Fatalf("the UI's request is not newer: %+v", third)
	}

	// Resync state: running, then completed, which keeps the start.
	start := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	next := start.Add(time.Hour)
	st, err := c.PatchResyncState(ctx, "", port.ResyncStateUpdate{Status: port.ResyncRunning, LastResyncStart: &start, NextResync: &next, Interval: time.Hour})
	if err != nil || st.Status != port.ResyncRunning || st.UpdatedAt.IsZero() || *st.IntervalMinutes != 60 || st.LastResyncEnd != nil {
		t.Fatalf("running: %+v %v", st, err)
	}
	end := start.Add(time.Minute)
	st, err = c.PatchResyncState(ctx, "", port.ResyncStateUpdate{Status: port.ResyncCompleted, LastResyncEnd: &end, NextResync: &next, Interval: time.Hour})
	if err != nil || st.Status != port.ResyncCompleted || !st.LastResyncStart.Equal(start) || !st.LastResyncEnd.Equal(end) {
		t.Fatalf("completed: %+v %v", st, err)
	}
	if _, err := c.PatchResyncState(ctx, "", port.ResyncStateUpdate{Status: "done"}); !port.HasCode(err, port.CodeInvalidInput) {
		t.Fatalf("bad status: %v", err)
	}

	// Examples per kind, kinds escaped in the path.
	if err := c.PostKindExamples(ctx, "", "component", []map[string]any{{"kind": "Component"}, {"kind": "Component", "n": 2}}); err != nil {
		t.Fatal(err)
	}
	if err := c.PostKindExamples(ctx, "", "custom/kind+x", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.PostKindExamples(ctx, "", "", nil); !port.HasCode(err, port.CodeInvalidInput) {
		t.Fatalf("no kind: %v", err)
	}
	rec, _ := emu.Integration("abc")
	if len(rec.ResyncStateHistory) != 2 || len(rec.Examples["component"]) != 2 || rec.ExamplePosts["custom/kind+x"] != 1 {
		t.Fatalf("emulator record %+v", rec)
	}

	if err := c.DeleteIntegration(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteIntegration(ctx, ""); !port.IsNotFound(err) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestIntegrationBadInput(t *testing.T) {
	t.Parallel()
	_, c := env(t)
	ctx := context.Background()
	if _, err := c.CreateIntegration(ctx, port.NewIntegration{ChangelogDestination: map[string]any{"type": "SQS"}}, false); !port.IsInvalidRequest(err) {
		t.Fatalf("bad changelog destination: %v", err)
	}
	if _, err := c.CreateIntegration(ctx, port.NewIntegration{Config: map[string]any{"resources": "all"}}, false); !port.IsInvalidRequest(err) {
		t.Fatalf("bad config on create: %v", err)
	}
	if _, err := c.CreateIntegration(ctx, port.NewIntegration{}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PatchIntegrationConfig(ctx, "", map[string]any{"resources": []any{map[string]any{"kind": "x"}}}, false); !port.IsInvalidRequest(err) {
		t.Fatalf("bad config: %v", err)
	}
	if _, err := c.PatchIntegration(ctx, "", port.IntegrationPatch{ChangelogDestination: map[string]any{"type": "WEBHOOK"}}); !port.IsInvalidRequest(err) {
		t.Fatalf("webhook without url: %v", err)
	}
	for name, err := range map[string]error{
		"get": func() error { _, err := c.GetIntegration(ctx, "ghost"); return err }(),
		"patch": func() error {
			_, err := c.PatchIntegration(ctx, "ghost", port.IntegrationPatch{Version: "1"})
			return err
		}(),
		"config":  func() error { _, err := c.PatchIntegrationConfig(ctx, "ghost", map[string]any{}, false); return err }(),
		"request": func() error { _, err := c.GetResyncRequest(ctx, "ghost"); return err }(),
		"state": func() error {
			_, err := c.PatchResyncState(ctx, "ghost", port.ResyncStateUpdate{Status: port.ResyncFailed})
			return err
		}(),
		"examples": c.PostKindExamples(ctx, "ghost", "component", nil),
		"resync":   c.RequestResync(ctx, "ghost"),
		"delete":   c.DeleteIntegration(ctx, "ghost"),
	} {
		if !port.IsNotFound(err) || !strings.Contains(err.Error(), "ghost") {
			t.Errorf("%s of an unknown integration: %v", name, err)
		}
	}
}

func TestDatasourceEntitiesFromUserAgent(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	ctx := context.Background()
	ents := make([]port.Entity, 25)
	for i := range ents {
		ents[i] = port.Entity{Identifier: fmt.Sprintf("own-%02d", i)}
	}
	if _, err := c.BulkUpsert(ctx, "system", ents, port.UpsertOptions{}); err != nil {
		t.Fatal(err)
	}
	// Written by someone else: never listed as ours.
	if _, err := emu.PutEntity("system", port.Entity{Identifier: "theirs"}, "port-ocean/backstage/0.1.0/abc/exporter", false); err != nil {
		t.Fatal(err)
	}
	emu.ResetRequests()
	q := c.OwnDatasource()
	q.Limit = 10
	var got []string
	for e, err := range c.ListDatasourceEntities(ctx, q) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Blueprint != "system" {
			t.Fatalf("entity without its blueprint: %+v", e)
		}
		got = append(got, e.Identifier.(string))
	}
	if len(got) != 25 || got[0] != "own-00" || got[24] != "own-24" {
		t.Fatalf("listed %v", got)
	}
	if n := emu.Requests().ByRoute["POST /v1/blueprints/entities/datasource-entities"]; n != 3 {
		t.Fatalf("%d pages, want 3", n)
	}
	// A later writer adds itself; both see the entity.
	srv := httptest.NewServer(emu)
	defer srv.Close()
	other, err := port.New(port.Config{BaseURL: srv.URL, ClientID: emu.ClientID(), ClientSecret: emu.ClientSecret(),
		Version: "9", IntegrationIdentifier: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.UpsertEntity(ctx, "system", port.Entity{Identifier: "own-00"}, port.UpsertOptions{Merge: true}); err != nil {
		t.Fatal(err)
	}
	count := func(c *port.Client, before time.Time) int {
		q := c.OwnDatasource()
		q.Before = before
		n := 0
		for _, err := range c.ListDatasourceEntities(ctx, q) {
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		return n
	}
	if n := count(other, time.Time{}); n != 1 {
		t.Fatalf("the other installation lists %d entities, want 1", n)
	}
	if n := count(c, time.Now().Add(-time.Hour)); n != 0 {
		t.Fatalf("before an hour ago: %d entities", n)
	}
	for _, err := range c.ListDatasourceEntities(ctx, port.DatasourceQuery{}) {
		if !port.HasCode(err, port.CodeInvalidInput) {
			t.Fatalf("empty query: %v", err)
		}
	}
}

// Log lines reach the integration's event log at the ingest URL Port
// names; a URL off Port's domain never gets the token.
func TestPostIntegrationLogs(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	ctx := context.Background()
	in, err := c.CreateIntegration(ctx, port.NewIntegration{Title: "Backstage"}, false)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	lines := []port.LogLine{{Level: "ERROR", Message: "mapping refused: resources[0]: unknown key", Timestamp: at, Extra: map[string]any{"reason": "x"}}}
	if err := c.PostIntegrationLogs(ctx, in.LogAttributes.IngestURL, lines); err != nil {
		t.Fatal(err)
	}
	rec, _ := emu.Integration("abc")
	if len(rec.Logs) != 1 || !strings.Contains(fmt.Sprint(rec.Logs[0]), "mapping refused") {
		t.Fatalf("logs %v", rec.Logs)
	}
	if err := c.PostIntegrationLogs(ctx, in.LogAttributes.IngestURL, nil); err != nil {
		t.Fatalf("no lines: %v", err)
	}
	for _, bad := range []string{"https://evil.example.com/logs", "relative/path", "http://ingest.port.io.evil.com/x", ""} {
		if err := c.PostIntegrationLogs(ctx, bad, lines); err == nil || !strings.Contains(err.Error(), "ingest URL") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
