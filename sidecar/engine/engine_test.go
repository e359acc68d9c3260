package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/plan"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
	"github.com/portbridge/portbridge/sidecar/state"
)

// The example catalog: all.yaml has every kind but users and groups, which
// acme-corp.yaml adds.
var examples = []string{"../../testdata/backstage-examples/all.yaml", "../../testdata/backstage-examples/acme-corp.yaml"}

// env is the engine wired to the catalog and Port emulators, a real state
// file and the default mapping: the same parts as production.
type env struct {
	t     *testing.T
	fault atomic.Pointer[scanFault]
	// runErr is what Run returned (read after done is closed); runMayFail
	// says a test expects it.
	runErr     error
	runMayFail bool
	cat        *catalogtest.Emulator
	portEmu    *porttest.Emulator
	portCl     *port.Client
	catCl      *catalog.Client
	store      *state.Store
	eng        *engine.Engine
	opts       engine.Options
	cancel     context.CancelFunc
	done       chan struct{}
}

type envOption func(*engine.Options)

func newEnv(t *testing.T, load func(*catalogtest.Emulator), opts ...envOption) *env {
	t.Helper()
	e := &env{t: t}
	e.cat = catalogtest.New(catalogtest.Options{Token: "catalog-token-123", Seed: 1})
	if load != nil {
		load(e.cat)
	}
	catSrv := httptest.NewServer(e.scanFaults(e.cat))
	t.Cleanup(catSrv.Close)
	e.portEmu = porttest.New(porttest.Options{})
	portSrv := httptest.NewServer(e.portEmu)
	t.Cleanup(portSrv.Close)
	var err error
	e.portCl, err = port.New(port.Config{BaseURL: portSrv.URL, ClientID: e.portEmu.ClientID(), ClientSecret: e.portEmu.ClientSecret(),
		IntegrationIdentifier: "engine-test", RetryBaseDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mapping.EnsureBlueprints(context.Background(), e.portCl, mapping.DefaultBlueprints()); err != nil {
		t.Fatal(err)
	}
	e.store, err = state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.store.Close() })
	mcfg := mapping.DefaultConfig()
	mapper, err := mapping.New(mcfg, mapping.Options{Blueprints: mapping.DefaultBlueprints()})
	if err != nil {
		t.Fatal(err)
	}
	e.opts = engine.Options{Store: e.store, Port: e.portCl, Mapper: mapper, ManagedBlueprints: mcfg.ManagedBlueprints(),
		Policy: plan.PolicySync, CreateMissingRelatedEntities: mcfg.CreateMissingRelatedEntities, MergeEntities: mcfg.EnableMergeEntity,
		DeleteDependents: mcfg.DeleteDependentEntities, DeletionThreshold: mcfg.EntityDeletionThreshold,
		DeleteGracePeriod: 50 * time.Millisecond, RetryBase: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		CompileMapping: func(doc []byte) (engine.Mapper, error) {
			c, err := mapping.Load(doc, "request")
			if err != nil {
				return nil, err
			}
			return mapping.New(c, mapping.Options{Blueprints: mapping.DefaultBlueprints()})
		}}
	if os.Getenv("PORTBRIDGE_TEST_LOG") != "" {
		e.opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, o := range opts {
		o(&e.opts)
	}
	e.catCl, err = catalog.New(catalog.Config{BaseURL: catSrv.URL, Token: "catalog-token-123", Retries: -1, PageSize: e.opts.PageSize})
	if err != nil {
		t.Fatal(err)
	}
	e.opts.Catalog = e.catCl
	e.start()
	return e
}

func (e *env) start() {
	e.t.Helper()
	eng, err := engine.New(e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.eng = eng
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		if err := eng.Run(ctx); err != nil {
			e.runErr = err
			if !e.runMayFail {
				e.t.Errorf("engine run: %v", err)
			}
		}
	}()
	e.t.Cleanup(e.stop)
}

func (e *env) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
		e.cancel = nil
	}
}

func (e *env) resync() *engine.Report {
	e.t.Helper()
	rep, err := e.eng.Resync(context.Background(), "test", false)
	if err != nil {
		e.t.Fatalf("resync: %v (deletions: %s)", err, rep.Snapshot().DeletionsSkipped)
	}
	return rep.Snapshot()
}

func (e *env) writes() int { return e.portEmu.Requests().Writes }

func (e *env) bulkRequests() int {
	return e.portEmu.Requests().ByRoute["POST /v1/blueprints/{b}/entities/bulk"]
}

// publish sends entities (or deletions of refs) through the change path.
func (e *env) publish(changes ...state.Change) {
	e.t.Helper()
	if _, err := e.eng.Publish(context.Background(), changes, false); err != nil {
		e.t.Fatal(err)
	}
}

func upsertChange(t *testing.T, ent catalog.Entity) state.Change {
	t.Helper()
	ref, err := catalog.RefOf(ent)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ent)
	if err != nil {
		t.Fatal(err)
	}
	return state.Change{Ref: ref.String(), ObservedAt: time.Now(), Entity: b}
}

func deleteChange(ref string) state.Change {
	return state.Change{Ref: ref, ObservedAt: time.Now(), Deleted: true}
}

// eventually polls cond; it fails the test after a generous bound (this is
// a wait for asynchronous work, not a performance assertion).
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

func loadExamples(t *testing.T) func(*catalogtest.Emulator) {
	return func(c *catalogtest.Emulator) {
		if err := c.LoadFiles(examples...); err != nil {
			t.Fatal(err)
		}
	}
}

func portEntity(e *env, bp, id string) (port.Entity, bool) {
	r, ok := e.portEmu.Entity(bp, id)
	return r.Entity, ok
}

func TestInitialResyncThenNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t))
	rep := e.resync()
	if rep.Totals.Seen != uint64(e.cat.Len()) || rep.Totals.Failed != 0 || rep.Totals.Pushed == 0 {
		t.Fatalf("first resync: %+v (catalog has %d)", rep.Totals, e.cat.Len())
	}
	// Relations come out complete: the example component that provides
	// several APIs has all of them.
	found := false
	for _, ent := range e.portEmu.Entities("component") {
		if apis, ok := ent.Relations["providesApis"].([]any); ok && len(apis) > 1 {
			found = true
		}
		if sys, ok := ent.Relations["system"].(string); ok && strings.HasSuffix(sys, "/") {
			t.Errorf("%v: system relation %q ends in /", ent.Identifier, sys)
		}
	}
	if !found {
		t.Error("no component with more than one provided API: many-relations lost")
	}
	if _, ok := portEntity(e, "component", "component:default/artist-lookup"); !ok {
		t.Error("component:default/artist-lookup not in Port")
	}
	// Every Port entity came from us, with our User-Agent as data source.
	for _, r := range e.portEmu.Records("component") {
		if len(r.DataSources) == 0 || !strings.Contains(r.DataSources[0], "portbridge/backstage/") || !strings.Contains(r.DataSources[0], "/engine-test/exporter") {
			t.Errorf("%v: data sources %v", r.Entity.Identifier, r.DataSources)
			break
		}
	}

	before := e.writes()
	rep = e.resync()
	if got := e.writes() - before; got != 0 {
		t.Fatalf("second resync with nothing changed made %d Port writes", got)
	}
	if rep.Totals.Unchanged == 0 || rep.Totals.Pushed != 0 {
		t.Fatalf("second resync: %+v", rep.Totals)
	}
}

func TestChangePath(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t))
	e.resync()
	ref := "component:default/artist-lookup"
	ent, ok := e.cat.Get(ref)
	if !ok {
		t.Fatal("example entity missing")
	}

	t.Run("description change is one bulk upsert of one entity", func(t *testing.T) {
		bulk, writes := e.bulkRequests(), e.writes()
		ent["metadata"].(map[string]any)["description"] = "changed by the test"
		e.publish(upsertChange(t, ent))
		eventually(t, "the new description in Port", func() bool {
			pe, _ := portEntity(e, "component", ref)
			return pe.Properties["description"] == "changed by the test"
		})
		eventually(t, "the queue to drain", func() bool { return e.store.QueueDepth() == 0 })
		if b, w := e.bulkRequests()-bulk, e.writes()-writes; b != 1 || w != 1 {
			t.Fatalf("%d bulk requests, %d writes; want 1 and 1", b, w)
		}
	})

	t.Run("a field the mapping does not use writes nothing", func(t *testing.T) {
		writes := e.writes()
		ent["metadata"].(map[string]any)["unmappedField"] = "x"
		e.publish(upsertChange(t, ent))
		eventually(t, "the queue to drain", func() bool { return e.store.QueueDepth() == 0 })
		if w := e.writes() - writes; w != 0 {
			t.Fatalf("%d Port writes for an unmapped field", w)
		}
	})

	t.Run("an older observation never overwrites a newer one", func(t *testing.T) {
		newer := upsertChange(t, ent)
		ent["metadata"].(map[string]any)["description"] = "older"
		older := upsertChange(t, ent)
		older.ObservedAt = newer.ObservedAt.Add(-time.Minute)
		ent["metadata"].(map[string]any)["description"] = "newest"
		newer = upsertChange(t, ent)
		e.publish(newer)
		eventually(t, "newest in Port", func() bool {
			pe, _ := portEntity(e, "component", ref)
			return pe.Properties["description"] == "newest"
		})
		eventually(t, "the queue to drain", func() bool { return e.store.QueueDepth() == 0 })
		e.publish(older)
		eventually(t, "the queue to drain", func() bool { return e.store.QueueDepth() == 0 })
		if pe, _ := portEntity(e, "component", ref); pe.Properties["description"] != "newest" {
			t.Fatalf("description %v after a stale notification", pe.Properties["description"])
		}
	})

	t.Run("deletion after the grace period, only what we own", func(t *testing.T) {
		// Someone else's entity in a blueprint we manage.
		if _, err := e.portEmu.PutEntity("component", port.Entity{Identifier: "not-ours", Title: "Not ours"}, "someone-else", false); err != nil {
			t.Fatal(err)
		}
		if err := e.cat.Delete(ref); err != nil {
			t.Fatal(err)
		}
		e.publish(deleteChange(ref))
		eventually(t, "the entity deleted in Port", func() bool {
			_, ok := portEntity(e, "component", ref)
			return !ok
		})
		if _, ok := portEntity(e, "component", "not-ours"); !ok {
			t.Fatal("an entity we did not create was deleted")
		}
		// A resync also leaves it alone.
		e.resync()
		if _, ok := portEntity(e, "component", "not-ours"); !ok {
			t.Fatal("a resync deleted an entity we did not create")
		}
	})

	t.Run("a deletion cancelled by a re-add", func(t *testing.T) {
		other := "component:default/playback-order"
		if _, ok := portEntity(e, "component", other); !ok {
			t.Fatal("precondition: entity in Port")
		}
		e.publish(deleteChange(other)) // the catalog still has it
		eventually(t, "the queue to drain", func() bool { return e.store.QueueDepth() == 0 })
		if _, ok := portEntity(e, "component", other); !ok {
			t.Fatal("deleted although the catalog still has it")
		}
	})
}

func TestResyncDeletesSafely(t *testing.T) {
	t.Parallel()
	gen := func(n int) func(*catalogtest.Emulator) {
		return func(c *catalogtest.Emulator) {
			if err := c.UpsertAll(catalogtest.Generate(n, 7)); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("scan failing halfway deletes nothing", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, gen(400), func(o *engine.Options) { o.PageSize = 50 })
		e.resync()
		owned := e.ownedTotal()
		refs := e.cat.Refs()
		if err := e.cat.Delete(refs[:20]...); err != nil {
			t.Fatal(err)
		}
		e.cat.FailAfter(3, 500)
		rep, err := e.eng.Resync(context.Background(), "test", false)
		if err == nil {
			t.Fatal("resync over a failing catalog succeeded")
		}
		if s := rep.Snapshot(); s.Totals.Deleted != 0 || !strings.Contains(s.DeletionsSkipped, "did not complete") {
			t.Fatalf("deleted %d, reason %q", s.Totals.Deleted, s.DeletionsSkipped)
		}
		if e.ownedTotal() != owned {
			t.Fatal("ownership records changed")
		}
		e.cat.FailAfter(-1, 0)
		rep2 := e.resync()
		if rep2.Totals.Deleted == 0 {
			t.Fatalf("a complete resync deleted nothing: %+v", rep2.Totals)
		}
	})

	t.Run("a catalog that returns 5 percent deletes nothing and says why", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, gen(400))
		e.resync()
		refs := e.cat.Refs()
		if err := e.cat.Delete(refs[:380]...); err != nil {
			t.Fatal(err)
		}
		writes := e.writes()
		rep := e.resync()
		if rep.Totals.Deleted != 0 || !strings.Contains(rep.DeletionsSkipped, "entityDeletionThreshold") {
			t.Fatalf("deleted %d, reason %q", rep.Totals.Deleted, rep.DeletionsSkipped)
		}
		if e.writes() != writes {
			t.Fatalf("%d writes", e.writes()-writes)
		}
	})

	t.Run("upsert-only never deletes", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, gen(100), func(o *engine.Options) { o.Policy = plan.PolicyUpsertOnly })
		e.resync()
		refs := e.cat.Refs()
		if err := e.cat.Delete(refs[:5]...); err != nil {
			t.Fatal(err)
		}
		rep := e.resync()
		if rep.Totals.Deleted != 0 || !strings.Contains(rep.DeletionsSkipped, "upsert-only") {
			t.Fatalf("deleted %d, reason %q", rep.Totals.Deleted, rep.DeletionsSkipped)
		}
	})

	t.Run("dry run plans and writes nothing", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, gen(60))
		writes := e.writes()
		rep, err := e.eng.Resync(context.Background(), "test", true)
		if err != nil {
			t.Fatal(err)
		}
		s := rep.Snapshot()
		if e.writes() != writes || len(s.Plan.Create) == 0 {
			t.Fatalf("writes %d, plan %d creates", e.writes()-writes, len(s.Plan.Create))
		}
		if n, _, _ := e.store.Counts(); n != 0 {
			t.Fatalf("dry run wrote %d state records", n)
		}
	})
}

func (e *env) ownedTotal() uint64 {
	counts, err := e.store.OwnedCounts()
	if err != nil {
		e.t.Fatal(err)
	}
	var n uint64
	for _, c := range counts {
		n += c
	}
	return n
}

func TestMappingChangePushesOnlyChangedOutputs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t))
	e.resync()
	e.stop()
	// A mapping that changes only the title of groups.
	doc := strings.Replace(string(mapping.DefaultMappingYAML()), "title: .metadata.title // .spec.profile.displayName // .metadata.name\n          blueprint: '\"group\"'",
		"title: '\"Team \" + (.metadata.title // .spec.profile.displayName // .metadata.name)'\n          blueprint: '\"group\"'", 1)
	if doc == string(mapping.DefaultMappingYAML()) {
		t.Fatal("could not edit the default mapping for the test")
	}
	cfg, err := mapping.Load([]byte(doc), "edited")
	if err != nil {
		t.Fatal(err)
	}
	e.opts.Mapper, err = mapping.New(cfg, mapping.Options{Blueprints: mapping.DefaultBlueprints()})
	if err != nil {
		t.Fatal(err)
	}
	e.start()
	rep := e.resync()
	var groups uint64
	for _, r := range e.cat.Refs() {
		if strings.HasPrefix(r, "group:") {
			groups++
		}
	}
	if rep.Totals.Pushed != groups || rep.PerKind["group"].Pushed != groups {
		t.Fatalf("pushed %d (groups %d); totals %+v kinds %v", rep.Totals.Pushed, groups, rep.Totals, rep.PerKind)
	}
}

func TestPortOutageDuringResync(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a 30 s Port outage")
	}
	t.Parallel()
	e := newEnv(t, func(c *catalogtest.Emulator) {
		if err := c.UpsertAll(catalogtest.Generate(2000, 3)); err != nil {
			t.Fatal(err)
		}
	}, func(o *engine.Options) { o.PageSize = 100 })
	e.portEmu.SetRateBudget(200, 5*time.Second)
	var once sync.Once
	go func() {
		// Let the resync get going, then make Port fail for 30 s.
		eventually(t, "the resync to start writing", func() bool { return e.bulkRequests() > 3 })
		once.Do(func() {
			e.portEmu.InjectFaults(porttest.FaultSpec{Status: 429, RetryAfter: time.Second, For: 15 * time.Second},
				porttest.FaultSpec{Status: 503, For: 30 * time.Second})
		})
	}()
	rep := e.resync()
	if rep.Totals.Failed != 0 {
		t.Fatalf("failed %d", rep.Totals.Failed)
	}
	var inPort int
	for _, bp := range e.opts.ManagedBlueprints {
		inPort += len(e.portEmu.Entities(bp))
	}
	if uint64(inPort) != e.ownedTotal() || inPort == 0 {
		t.Fatalf("%d in Port, %d owned", inPort, e.ownedTotal())
	}
	if over := e.portEmu.Requests().OverBudget; over != 0 {
		t.Fatalf("%d requests over the rate budget", over)
	}
}

func TestVerifyRepairsDrift(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t))
	e.resync()
	ref := "component:default/artist-lookup"
	pe, _ := portEntity(e, "component", ref)
	pe.Properties["description"] = "edited in the Port UI"
	if _, err := e.portEmu.PutEntity("component", pe, "someone", false); err != nil {
		t.Fatal(err)
	}
	if err := e.portEmu.DeleteEntity("api", "api:default/spotify"); err != nil {
		t.Fatal(err)
	}
	// A resync trusts its hashes: it does not see the drift.
	if rep := e.resync(); rep.Totals.Pushed != 0 {
		t.Fatalf("resync pushed %d", rep.Totals.Pushed)
	}
	rep, err := e.eng.Verify(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Snapshot()
	if s.Totals.Pushed != 2 {
		t.Fatalf("verify repaired %d, want 2: %+v", s.Totals.Pushed, s.Totals)
	}
	got, _ := portEntity(e, "component", ref)
	if got.Properties["description"] == "edited in the Port UI" {
		t.Fatal("drift not repaired")
	}
	if _, ok := portEntity(e, "api", "api:default/spotify"); !ok {
		t.Fatal("deleted entity not restored")
	}
	// And a second pass finds nothing to do.
	rep, err = e.eng.Verify(context.Background(), "test")
	if err != nil || rep.Snapshot().Totals.Pushed != 0 {
		t.Fatalf("second verify: %v %+v", err, rep.Snapshot().Totals)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t))
	e.resync()
	st, err := e.eng.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Last == nil || st.Last.State != "succeeded" || st.Owned["component"] == 0 || st.Queue.Depth != 0 || st.Policy != "sync" {
		t.Fatalf("status %+v", st)
	}
	ent, _ := e.cat.Get("component:default/artist-lookup")
	prev, err := e.eng.PreviewMapping(context.Background(), ent, "")
	if err != nil || len(prev.Entities) != 1 || prev.Entities[0].Blueprint != "component" {
		t.Fatalf("preview %v %v", prev, err)
	}
	if _, err := e.eng.PreviewMapping(context.Background(), ent, "resources: [\n"); !errors.Is(err, engine.ErrInvalidMapping) {
		t.Fatalf("preview with a broken mapping: %v", err)
	}
}

func TestDependencyOrderWithoutCreateMissing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *catalogtest.Emulator) {
		if err := c.UpsertAll(catalogtest.Generate(300, 11)); err != nil {
			t.Fatal(err)
		}
	}, func(o *engine.Options) { o.CreateMissingRelatedEntities = false })
	rep, err := e.eng.Resync(context.Background(), "test", false)
	if err != nil {
		t.Fatalf("resync: %v", err)
	}
	s := rep.Snapshot()
	if s.Totals.Failed != 0 || s.Totals.Pushed == 0 {
		t.Fatalf("totals %+v", s.Totals)
	}
	// Port created nothing on its own: every entity there is one we pushed.
	var inPort int
	for _, bp := range e.opts.ManagedBlueprints {
		inPort += len(e.portEmu.Entities(bp))
	}
	if uint64(inPort) != e.ownedTotal() {
		t.Fatalf("%d entities in Port, %d pushed by us", inPort, e.ownedTotal())
	}
}

func TestResyncBatchesChangesAcrossPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *catalogtest.Emulator) {
		if err := c.UpsertAll(catalogtest.Generate(3000, 5)); err != nil {
			t.Fatal(err)
		}
	}, func(o *engine.Options) { o.PageSize = 100 })
	e.resync()
	// Change 60 components spread over the whole catalog.
	var changed int
	refs := e.cat.Refs()
	for i := 0; i < len(refs) && changed < 60; i += 7 {
		if !strings.HasPrefix(refs[i], "component:") {
			continue
		}
		ent, _ := e.cat.Get(refs[i])
		ent["metadata"].(map[string]any)["description"] = "changed " + refs[i]
		if err := e.cat.Upsert(ent); err != nil {
			t.Fatal(err)
		}
		changed++
	}
	if changed != 60 {
		t.Fatalf("only %d components to change", changed)
	}
	bulk := e.bulkRequests()
	rep := e.resync()
	if got := e.bulkRequests() - bulk; got != 3 || rep.Totals.Pushed != 60 {
		t.Fatalf("%d bulk requests for 60 changed entities of one blueprint (want ceil(60/20) = 3); pushed %d", got, rep.Totals.Pushed)
	}
}

// An entity whose mapping no longer produces an output (its selector stopped
// matching) has that Port entity deleted; on a resync as on the change path.
func TestOutputsNoLongerProducedAreDeleted(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(string(mapping.DefaultMappingYAML()), "  - kind: component\n    selector:\n      query: 'true'",
		"  - kind: component\n    selector:\n      query: '.spec.lifecycle != \"deprecated\"'", 1)
	if doc == string(mapping.DefaultMappingYAML()) {
		t.Fatal("could not edit the default mapping for the test")
	}
	cfg, err := mapping.Load([]byte(doc), "edited")
	if err != nil {
		t.Fatal(err)
	}
	mapper, err := mapping.New(cfg, mapping.Options{Blueprints: mapping.DefaultBlueprints()})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, loadExamples(t), func(o *engine.Options) { o.Mapper = mapper })
	e.resync()
	deprecate := func(ref string) catalog.Entity {
		ent, ok := e.cat.Get(ref)
		if !ok {
			t.Fatalf("%s missing", ref)
		}
		ent["spec"].(map[string]any)["lifecycle"] = "deprecated"
		return ent
	}
	// Change path.
	ref := "component:default/artist-lookup"
	e.publish(upsertChange(t, deprecate(ref)))
	eventually(t, "the deselected entity deleted in Port", func() bool {
		_, ok := portEntity(e, "component", ref)
		return !ok
	})
	// Resync.
	ref2 := "component:default/playback-order"
	if err := e.cat.Upsert(deprecate(ref2)); err != nil {
		t.Fatal(err)
	}
	rep := e.resync()
	if _, ok := portEntity(e, "component", ref2); ok || rep.Totals.Deleted != 1 {
		t.Fatalf("resync: still in Port %v, deleted %d", ok, rep.Totals.Deleted)
	}
	if counts, _ := e.store.OwnedCounts(); counts["component"] != uint64(len(e.portEmu.Entities("component"))) {
		t.Fatalf("owned %d components, Port has %d", counts["component"], len(e.portEmu.Entities("component")))
	}
}

// A publisher's full snapshot of a large catalog goes through the change
// path: every change must be applied (and the unchanged ones cost nothing).
func TestLargeSnapshotDrains(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *catalogtest.Emulator) {
		if err := c.UpsertAll(catalogtest.Generate(5000, 21)); err != nil {
			t.Fatal(err)
		}
	})
	var changes []state.Change
	for _, ref := range e.cat.Refs() {
		ent, _ := e.cat.Get(ref)
		changes = append(changes, upsertChange(t, ent))
	}
	start := time.Now()
	for i := 0; i < len(changes); i += 500 {
		e.publish(changes[i:min(i+500, len(changes))]...)
	}
	eventually(t, "the snapshot applied", func() bool { return e.store.QueueDepth() == 0 })
	t.Logf("%d changes applied in %s", len(changes), time.Since(start).Round(time.Millisecond))
	if n := e.ownedTotal(); n != uint64(len(changes)) {
		t.Fatalf("%d owned after the snapshot, want %d", n, len(changes))
	}
	writes := e.writes()
	for i := 0; i < len(changes); i += 500 {
		e.publish(changes[i:min(i+500, len(changes))]...)
	}
	eventually(t, "the second snapshot applied", func() bool { return e.store.QueueDepth() == 0 })
	if w := e.writes() - writes; w != 0 {
		t.Fatalf("an unchanged snapshot made %d Port writes", w)
	}
}
