package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/integration"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/plan"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
	"github.com/portbridge/portbridge/sidecar/state"
)

const id = "it-test"

var examples = []string{"../../testdata/backstage-examples/all.yaml", "../../testdata/backstage-examples/acme-corp.yaml"}

// rig is the sidecar's parts wired as production wires them — catalog
// and Port emulators, a real state file, the engine and the loop — with
// the loop's poll driven by the test.
type rig struct {
	t       *testing.T
	cat     *catalogtest.Emulator
	emu     *porttest.Emulator
	pc      *port.Client
	eng     *engine.Engine
	loop    *integration.Loop
	opts    integration.Options
	catURL  string
	portURL string
	cancel  context.CancelFunc
	done    chan struct{}
}

type rigOption func(*integration.Options)

func fromPort(o *integration.Options) { o.FromPort = true }

func newRig(t *testing.T, version string, opts ...rigOption) *rig {
	t.Helper()
	r := &rig{t: t}
	r.cat = catalogtest.New(catalogtest.Options{Token: "catalog-token-123", Seed: 3})
	if err := r.cat.LoadFiles(examples...); err != nil {
		t.Fatal(err)
	}
	if err := r.cat.Upsert(secretResource()); err != nil {
		t.Fatal(err)
	}
	catSrv := httptest.NewServer(r.cat)
	t.Cleanup(catSrv.Close)
	r.emu = porttest.New(porttest.Options{})
	portSrv := httptest.NewServer(r.emu)
	t.Cleanup(portSrv.Close)
	r.start(catSrv.URL, portSrv.URL, version, filepath.Join(t.TempDir(), "state.db"), opts...)
	return r
}

// start wires and runs a sidecar (again, for a restart with another
// version or state file).
func (r *rig) start(catURL, portURL, version, statePath string, opts ...rigOption) {
	t := r.t
	t.Helper()
	r.catURL, r.portURL = catURL, portURL
	var err error
	r.pc, err = port.New(port.Config{BaseURL: portURL, ClientID: r.emu.ClientID(), ClientSecret: r.emu.ClientSecret(), Version: version,
		IntegrationIdentifier: id, RetryBaseDelay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := catalog.New(catalog.Config{BaseURL: catURL, Token: "catalog-token-123", Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(statePath, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	doc, err := mapping.Document(mapping.DefaultMappingYAML(), "default")
	if err != nil {
		t.Fatal(err)
	}
	mopts := mapping.Options{Blueprints: mapping.DefaultBlueprints()}
	mcfg := mapping.DefaultConfig()
	mapper, err := mapping.New(mcfg, mopts)
	if err != nil {
		t.Fatal(err)
	}
	var loop *integration.Loop
	prepare := func(ctx context.Context, dryRun bool) (engine.Mapper, []string, error) {
		if _, err := mapping.EnsureBlueprints(ctx, r.pc, mapping.DefaultBlueprints()); err != nil {
			return nil, nil, err
		}
		m, err := loop.Start(ctx, dryRun)
		if err != nil || m != nil {
			return m, nil, err
		}
		loop.UseMapping(mapper)
		return mapper, nil, nil
	}
	r.eng, err = engine.New(engine.Options{Store: store, Catalog: cc, Port: r.pc, Mapper: mapper, Prepare: prepare, ManagedBlueprints: mcfg.ManagedBlueprints(),
		Policy: plan.PolicySync, CreateMissingRelatedEntities: true, MergeEntities: true, DeleteDependents: true, DeletionThreshold: 0.9,
		ResyncInterval: time.Hour, ResyncOnStart: true, RetryBase: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, DeleteGracePeriod: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r.opts = integration.Options{Identifier: id, Title: "Backstage (test)", Version: version, FileMapping: doc,
		Compile: integration.Compiler(r.pc, mopts, id), PollInterval: time.Hour, SendExamples: true}
	for _, o := range opts {
		o(&r.opts)
	}
	loop, err = integration.New(r.opts, r.pc, r.eng)
	if err != nil {
		t.Fatal(err)
	}
	r.loop = loop
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() {
		defer close(r.done)
		go loop.Run(ctx)
		if err := r.eng.Run(ctx); err != nil {
			t.Errorf("engine: %v", err)
		}
	}()
	t.Cleanup(r.stop)
}

func (r *rig) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

func (r *rig) record() porttest.IntegrationRecord {
	r.t.Helper()
	rec, ok := r.emu.Integration(id)
	if !ok {
		r.t.Fatal("integration not in Port")
	}
	return rec
}

// states is the length of the resync-state history now.
func (r *rig) states() int { return len(r.record().ResyncStateHistory) }

// waitStates waits until the resync-state history has grown past after
// and ends with want.
func (r *rig) waitStates(what string, after int, want ...string) []map[string]any {
	r.t.Helper()
	var hist []map[string]any
	eventually(r.t, what, func() bool {
		rec, ok := r.emu.Integration(id)
		if !ok {
			return false
		}
		hist = rec.ResyncStateHistory
		if len(hist) < after+len(want) {
			return false
		}
		for i, w := range want {
			if hist[len(hist)-len(want)+i]["status"] != w {
				return false
			}
		}
		return true
	})
	return hist
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// secretResource carries secrets in annotations, labels and spec (a
// Resource: the examples have one other, so it is among the first 5).
func secretResource() catalog.Entity {
	return catalog.Entity{"apiVersion": "backstage.io/v1alpha1", "kind": "Resource",
		"metadata": map[string]any{"name": "aaa-secretive", "namespace": "default", "description": "has secrets",
			"annotations": map[string]any{"vault.io/token": "s.abcdefgh", "github.com/project-slug": "acme/secretive",
				"backstage.io/source-location": "url:https://deploy:hunter2@git.example.com/acme/secretive"},
			"labels": map[string]any{"db-password": "p4ss", "tier": "gold"}},
		"spec": map[string]any{"type": "database", "owner": "team-a",
			"deployKey": "plain", "notes": "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 inside"}}
}

// At start the integration is created with our own type, version, title
// and the file mapping as its config; a later version patches it; an
// integration of another type is never taken over.
func TestRegistration(t *testing.T) {
	t.Parallel()
	r := newRig(t, "1.0.0")
	eventually(t, "registration", func() bool { return r.loop.Status().Registered })
	r.waitStates("the start resync", 0, "running", "completed") // (stopping mid-resync waits for the shutdown bound)
	rec := r.record()
	if rec.InstallationAppType != integration.AppType || rec.Version != "1.0.0" || rec.Title != "Backstage (test)" {
		t.Fatalf("registered %+v", rec)
	}
	doc, _ := mapping.Document(mapping.DefaultMappingYAML(), "default")
	if !jsonEqual(rec.Config, doc) {
		t.Fatalf("config in Port is not the file mapping: %v", rec.Config)
	}
	if len(rec.ResyncRequests) != 0 {
		t.Fatalf("registration asked Port for a resync: %+v", rec.ResyncRequests)
	}

	// A restart with a newer version keeps the integration current, and a
	// title edited in Port stays.
	r.stop()
	if _, err := r.pc.PatchIntegration(context.Background(), id, port.IntegrationPatch{Title: ptr("Renamed in Port")}); err != nil {
		t.Fatal(err)
	}
	n := r.states()
	r2 := &rig{t: t, cat: r.cat, emu: r.emu}
	r2.start(r.catURL, r.portURL, "1.1.0", filepath.Join(t.TempDir(), "state.db"))
	eventually(t, "re-registration", func() bool { return r2.loop.Status().Registered })
	r2.waitStates("the second start resync", n, "running", "completed")
	if rec := r.record(); rec.Version != "1.1.0" || rec.Title != "Renamed in Port" || len(r.emu.Integrations()) != 1 {
		t.Fatalf("after an upgrade: %+v", rec)
	}
	r2.stop()

	// Someone else's integration under our identifier is left alone.
	if err := r.emu.PutIntegration(map[string]any{"installationId": "ocean-bs", "installationAppType": "backstage", "version": "0.2.57"}); err != nil {
		t.Fatal(err)
	}
	pc, _ := port.New(port.Config{BaseURL: r.portURL, ClientID: r.emu.ClientID(), ClientSecret: r.emu.ClientSecret(), IntegrationIdentifier: "ocean-bs"})
	loop, err := integration.New(integration.Options{Identifier: "ocean-bs", Version: "9", FileMapping: doc, FromPort: true,
		Compile: integration.Compiler(pc, mapping.Options{}, "ocean-bs")}, pc, r2.eng)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loop.Start(context.Background(), false); !errors.Is(err, integration.ErrForeignIntegration) {
		t.Fatalf("foreign integration: %v", err)
	}
	if rec, _ := r.emu.Integration("ocean-bs"); rec.Version != "0.2.57" || len(rec.Config) > 0 {
		t.Fatalf("the foreign integration was changed: %+v", rec)
	}
}

func ptr[T any](v T) *T { return &v }

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// A mapping edited in Port is applied within one poll without a restart:
// only the entities whose output changed are written, and the resync
// state goes running → completed. An invalid edit is refused with the
// reason in the resync state and the event log, the previous mapping
// stays in force, and fixing it applies it.
func TestMappingFromPort(t *testing.T) {
	t.Parallel()
	r := newRig(t, "1.0.0", fromPort)
	r.waitStates("the start resync", 0, "running", "completed")
	components := 0
	for _, ref := range r.cat.Refs() {
		if strings.HasPrefix(ref, "component:") {
			components++
		}
	}
	before := r.loop.Status().MappingFingerprint
	cfg := r.record().Config
	edit(t, cfg, "component", "description", `.metadata.description + " (from Port)"`)
	writes, bulk := r.emu.Requests().EntityWrites, r.emu.Requests().ByRoute["POST /v1/blueprints/{b}/entities/bulk"]
	n := r.states()
	if _, err := r.emu.EditIntegrationConfig(id, cfg); err != nil {
		t.Fatal(err)
	}
	r.loop.Poll(context.Background())
	hist := r.waitStates("the mapping's resync", n, "running", "completed")
	if st := r.loop.Status(); st.MappingFingerprint == before || st.MappingError != "" {
		t.Fatalf("status after the edit: %+v", st)
	}
	if got, want := r.emu.Requests().ByRoute["POST /v1/blueprints/{b}/entities/bulk"]-bulk, (components+19)/20; got != want || r.emu.Requests().EntityWrites-writes != want {
		t.Fatalf("%d bulk upserts (%d entity writes) for %d changed components, want %d", got, r.emu.Requests().EntityWrites-writes, components, want)
	}
	pe, _ := r.emu.Entity("component", "component:default/artist-lookup")
	if d, _ := pe.Entity.Properties["description"].(string); !strings.HasSuffix(d, " (from Port)") {
		t.Fatalf("description %q", d)
	}
	last := hist[len(hist)-1]
	if last["nextResync"] == nil || last["lastResyncEnd"] == nil || last["intervalInMinuets"] != 60.0 {
		t.Fatalf("completed state %v", last)
	}

	// An edit naming a property the blueprint lacks is refused.
	applied := r.loop.Status().MappingFingerprint
	edit(t, cfg, "component", "colour", `.spec.colour`)
	writes = r.emu.Requests().EntityWrites
	n = r.states()
	if _, err := r.emu.EditIntegrationConfig(id, cfg); err != nil {
		t.Fatal(err)
	}
	r.loop.Poll(context.Background())
	r.waitStates("the refusal and the requested resync", n, "failed", "running", "completed")
	st := r.loop.Status()
	if st.MappingFingerprint != applied || !strings.Contains(st.MappingError, `blueprint component has no property "colour"`) {
		t.Fatalf("status after a bad edit: %+v", st)
	}
	if !strings.Contains(fmt.Sprint(r.record().Logs), `has no property \"colour\"`) && !strings.Contains(fmt.Sprint(r.record().Logs), `has no property "colour"`) {
		t.Fatalf("Port's event log lacks the reason: %v", r.record().Logs)
	}
	// The resync request the edit made ran with the previous mapping:
	// nothing changed.
	if w := r.emu.Requests().EntityWrites - writes; w != 0 {
		t.Fatalf("%d entity writes after a refused mapping", w)
	}
	// Polling the same bad config again reports nothing new.
	n = r.states()
	r.loop.Poll(context.Background())
	if len(r.record().ResyncStateHistory) != n {
		t.Fatal("the same refused mapping was reported twice")
	}
	// Fixing it applies it.
	delete(cfg["resources"].([]any)[0].(map[string]any)["port"].(map[string]any)["entity"].(map[string]any)["mappings"].(map[string]any)["properties"].(map[string]any), "colour")
	if _, err := r.emu.EditIntegrationConfig(id, cfg); err != nil {
		t.Fatal(err)
	}
	r.loop.Poll(context.Background())
	eventually(t, "the fixed mapping", func() bool { st := r.loop.Status(); return st.MappingError == "" })
}

// edit sets a property's jq in the resource of a kind.
func edit(t *testing.T, cfg map[string]any, kind, prop, jq string) {
	t.Helper()
	for _, res := range cfg["resources"].([]any) {
		m := res.(map[string]any)
		if m["kind"] == kind {
			props := m["port"].(map[string]any)["entity"].(map[string]any)["mappings"].(map[string]any)["properties"].(map[string]any)
			props[prop] = jq
			return
		}
	}
	t.Fatalf("no resource of kind %s", kind)
}

// The resync button in Port's UI starts a resync at the next poll.
func TestResyncRequestFromPort(t *testing.T) {
	t.Parallel()
	r := newRig(t, "1.0.0")
	r.waitStates("the start resync", 0, "running", "completed")
	n := len(r.record().ResyncStateHistory)
	before := r.emu.Requests()
	r.loop.Poll(context.Background())
	after := r.emu.Requests()
	if len(r.record().ResyncStateHistory) != n {
		t.Fatal("a poll without a new request started a resync")
	}
	// The polling cost the README states: two GETs per poll (the reports
	// of the start resync may still be on their way, so routes are
	// counted, not the total).
	if after.ByRoute["GET /v1/integration/{id}"]-before.ByRoute["GET /v1/integration/{id}"] != 1 ||
		after.ByRoute["GET /v1/integration/{id}/resync-request"]-before.ByRoute["GET /v1/integration/{id}/resync-request"] != 1 {
		t.Fatalf("a quiet poll: before %v after %v", before.ByRoute, after.ByRoute)
	}
	if _, err := r.emu.RequestResync(id); err != nil {
		t.Fatal(err)
	}
	r.loop.Poll(context.Background())
	hist := r.waitStates("the requested resync", n, "running", "completed")
	if len(hist) != n+2 {
		t.Fatalf("history %v", hist)
	}
	st, _ := r.eng.Status(context.Background())
	if st.Last == nil || st.Last.Trigger != "port" {
		t.Fatalf("last resync %+v", st.Last)
	}
	if got := r.loop.Status().LastResyncRequest; got.IsZero() {
		t.Fatal("request not recorded")
	}
	// Every finished resync leaves a summary line in the event log.
	eventually(t, "two summary lines in the event log", func() bool { return strings.Count(fmt.Sprint(r.record().Logs), "resync resync-") == 2 })
}

// Raw examples reach Port per kind of the mapping, at most 5 each, with
// metadata.identifier as the mapping sees it and secrets masked.
func TestRawExamples(t *testing.T) {
	t.Parallel()
	r := newRig(t, "1.0.0")
	r.waitStates("the start resync", 0, "running", "completed")
	var rec porttest.IntegrationRecord
	eventually(t, "examples", func() bool {
		rec = r.record()
		return len(rec.Examples["component"]) > 0 && len(rec.Examples["API"]) > 0 && len(rec.Examples["resource"]) > 0 && len(rec.Examples["location"]) > 0
	})
	for kind, exs := range rec.Examples {
		if len(exs) == 0 || len(exs) > engine.ExamplesPerKind {
			t.Errorf("kind %s: %d examples", kind, len(exs))
		}
	}
	if _, ok := rec.Examples["API"]; !ok {
		t.Errorf("no examples under the mapping's kind API: %v", slices.Sorted(maps.Keys(rec.Examples)))
	}
	var secretive map[string]any
	for _, ex := range rec.Examples["resource"] {
		if ex["metadata"].(map[string]any)["name"] == "aaa-secretive" {
			secretive = ex
		}
	}
	if secretive == nil {
		t.Fatal("resource aaa-secretive is not among the examples")
	}
	meta := secretive["metadata"].(map[string]any)
	ann, labels, spec := meta["annotations"].(map[string]any), meta["labels"].(map[string]any), secretive["spec"].(map[string]any)
	for what, v := range map[string]any{"annotation vault.io/token": ann["vault.io/token"], "label db-password": labels["db-password"],
		"spec.deployKey": spec["deployKey"], "token in spec.notes": spec["notes"], "password in a URL": ann["backstage.io/source-location"]} {
		if v != integration.Masked {
			t.Errorf("%s not masked: %v", what, v)
		}
	}
	if ann["github.com/project-slug"] != "acme/secretive" || labels["tier"] != "gold" || meta["identifier"] != "resource:default/aaa-secretive" || meta["uid"] == integration.Masked {
		t.Errorf("plain values changed: %v %v %v", ann, labels, meta)
	}
	// The same examples are not sent again by the next resync.
	posts := rec.ExamplePosts["component"]
	n := r.states()
	if _, _, err := r.eng.TriggerResync(context.Background(), "test", false); err != nil {
		t.Fatal(err)
	}
	r.waitStates("the second resync", n, "running", "completed")
	time.Sleep(100 * time.Millisecond)
	if got := r.record().ExamplePosts["component"]; got != posts {
		t.Errorf("unchanged examples sent again: %d posts, was %d", got, posts)
	}
}

// With the mapping from the file, an edit in Port is ignored and Port's
// event log says so; a restart writes the file mapping back.
func TestFileMappingIgnoresEdits(t *testing.T) {
	t.Parallel()
	r := newRig(t, "1.0.0")
	r.waitStates("the start resync", 0, "running", "completed")
	cfg := r.record().Config
	edit(t, cfg, "component", "description", `"nope"`)
	if _, err := r.emu.EditIntegrationConfig(id, cfg); err != nil {
		t.Fatal(err)
	}
	writes, n := r.emu.Requests().EntityWrites, r.states()
	r.loop.Poll(context.Background())
	if !strings.Contains(fmt.Sprint(r.record().Logs), "mapping.source is file") {
		t.Fatalf("event log %v", r.record().Logs)
	}
	r.waitStates("the resync the edit requested", n, "running", "completed")
	if w := r.emu.Requests().EntityWrites - writes; w != 0 {
		t.Fatalf("%d entity writes after an ignored edit", w)
	}
}

// A dry run reads the integration and writes nothing to it.
func TestDryRunDoesNotRegister(t *testing.T) {
	t.Parallel()
	emu := porttest.New(porttest.Options{})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	pc, _ := port.New(port.Config{BaseURL: srv.URL, ClientID: emu.ClientID(), ClientSecret: emu.ClientSecret(), IntegrationIdentifier: id})
	e := newEngine(t, pc)
	loop, err := integration.New(integration.Options{Identifier: id, Version: "1", FromPort: true, Compile: integration.Compiler(pc, mapping.Options{}, id)}, pc, e)
	if err != nil {
		t.Fatal(err)
	}
	m, err := loop.Start(context.Background(), true)
	if err != nil || m != nil {
		t.Fatalf("dry run start: %v %v", m, err)
	}
	if len(emu.Integrations()) != 0 || emu.Requests().Writes != 0 {
		t.Fatalf("a dry run wrote to Port: %d integrations, %d writes", len(emu.Integrations()), emu.Requests().Writes)
	}
	// An integration whose mapping is wrong: a dry run fails and still
	// writes nothing (no refusal reported).
	if err := emu.PutIntegration(map[string]any{"installationId": id, "installationAppType": integration.AppType, "version": "1",
		"config": map[string]any{"resources": []any{}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := loop.Start(context.Background(), true); !errors.Is(err, integration.ErrInvalidMapping) {
		t.Fatalf("dry run over a wrong mapping: %v", err)
	}
	if rec, _ := emu.Integration(id); emu.Requests().Writes != 0 || len(rec.ResyncStateHistory) != 0 {
		t.Fatalf("a dry run reported to Port: %d writes, states %v", emu.Requests().Writes, rec.ResyncStateHistory)
	}
	if _, err := integration.New(integration.Options{Identifier: "bad id"}, pc, e); err == nil {
		t.Fatal("a bad identifier was accepted")
	}
}

// newEngine is an engine over an empty catalog, for loop-only checks.
func newEngine(t *testing.T, pc *port.Client) *engine.Engine {
	t.Helper()
	cat := catalogtest.New(catalogtest.Options{})
	srv := httptest.NewServer(cat)
	t.Cleanup(srv.Close)
	cc, _ := catalog.New(catalog.Config{BaseURL: srv.URL, Retries: -1})
	store, err := state.Open(filepath.Join(t.TempDir(), "s.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	m, _ := mapping.New(mapping.DefaultConfig(), mapping.Options{})
	e, err := engine.New(engine.Options{Store: store, Catalog: cc, Port: pc, Mapper: m})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// The compiler refuses every kind of wrong mapping with a reason naming
// the place, and says when it could not check (Port unreachable).
func TestCompilerRefuses(t *testing.T) {
	t.Parallel()
	emu := porttest.New(porttest.Options{})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	pc, _ := port.New(port.Config{BaseURL: srv.URL, ClientID: emu.ClientID(), ClientSecret: emu.ClientSecret(), IntegrationIdentifier: id, MaxRetries: -1})
	if _, err := mapping.EnsureBlueprints(context.Background(), pc, mapping.DefaultBlueprints()); err != nil {
		t.Fatal(err)
	}
	compile := integration.Compiler(pc, mapping.Options{Blueprints: mapping.DefaultBlueprints()}, id)
	res := func(props map[string]any, bp string) map[string]any {
		return map[string]any{"resources": []any{map[string]any{"kind": "component", "selector": map[string]any{"query": "true"},
			"port": map[string]any{"entity": map[string]any{"mappings": map[string]any{"identifier": ".metadata.identifier", "blueprint": bp, "properties": props}}}}}}
	}
	for _, tt := range []struct {
		name string
		cfg  map[string]any
		want string // "" means valid
	}{
		{"valid", res(map[string]any{"description": ".metadata.description"}, `"component"`), ""},
		{"no resources", map[string]any{"resources": []any{}}, "resources is empty"},
		{"empty config", map[string]any{}, "no resources"},
		{"unknown key", map[string]any{"resources": []any{}, "colour": "red"}, "colour: unknown key"},
		{"jq that does not compile", res(map[string]any{"description": ".metadata.description | ("}, `"component"`), "properties.description"},
		{"property the blueprint lacks", res(map[string]any{"colour": ".x"}, `"component"`), `blueprint component has no property "colour"`},
		{"blueprint Port lacks", res(nil, `"service"`), `blueprint "service" does not exist in Port`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := compile(context.Background(), tt.cfg)
			if tt.want == "" {
				if err != nil || m == nil {
					t.Fatalf("valid mapping refused: %v", err)
				}
				return
			}
			if !errors.Is(err, integration.ErrInvalidMapping) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an invalid mapping naming %q", err, tt.want)
			}
		})
	}
	// Port unreachable: not a verdict on the mapping.
	srv.Close()
	if _, err := compile(context.Background(), res(nil, `"component"`)); err == nil || errors.Is(err, integration.ErrInvalidMapping) {
		t.Fatalf("unreachable Port: %v", err)
	}
}
