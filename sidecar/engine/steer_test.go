package engine_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/state"
)

// editedMapping is the default mapping with one property's jq changed (the
// components' description) and entityDeletionThreshold set.
func editedMapping(t *testing.T, threshold string) *mapping.Mapper {
	t.Helper()
	doc := strings.Replace(string(mapping.DefaultMappingYAML()), "description: .metadata.description\n", "description: '(.metadata.description // \"\") + \" (edited)\"'\n", 1)
	doc = strings.Replace(doc, "entityDeletionThreshold: 0.9\n", "entityDeletionThreshold: "+threshold+"\n", 1)
	if !strings.Contains(doc, "(edited)") || !strings.Contains(doc, "entityDeletionThreshold: "+threshold+"\n") {
		t.Fatal("could not edit the default mapping for the test")
	}
	cfg, err := mapping.Load([]byte(doc), "edited")
	if err != nil {
		t.Fatal(err)
	}
	m, err := mapping.New(cfg, mapping.Options{Blueprints: mapping.DefaultBlueprints()})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A mapping applied while the engine runs writes exactly the entities whose
// mapped output changed, without a restart, and brings its global flags.
func TestApplyMappingHotWritesOnlyChangedOutputs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t))
	e.resync()
	components := uint64(0)
	for _, r := range e.cat.Refs() {
		if strings.HasPrefix(r, "component:") {
			components++
		}
	}
	bulk := e.bulkRequests()
	m := editedMapping(t, "0.5")
	id, err := e.eng.ApplyMapping(context.Background(), m, "test")
	if err != nil || id == "" {
		t.Fatalf("apply: %q %v", id, err)
	}
	if e.eng.MappingFingerprint() != m.Fingerprint() {
		t.Fatal("the new mapping is not in force")
	}
	var rep *engine.Report
	eventually(t, "the mapping's resync", func() bool {
		r, ok := e.eng.Pass(id)
		rep = r
		return ok && r.State == "succeeded"
	})
	if rep.Trigger != "mapping" || rep.Totals.Pushed != components || rep.PerKind["component"].Pushed != components {
		t.Fatalf("pushed %d (components %d): %+v per kind %v", rep.Totals.Pushed, components, rep.Totals, rep.PerKind)
	}
	for k, c := range rep.PerKind {
		if k != "component" && c.Pushed != 0 {
			t.Errorf("kind %s: %d pushed, want 0", k, c.Pushed)
		}
	}
	// Only partial batches: ceil(components/20) bulk requests.
	if got, want := e.bulkRequests()-bulk, int((components+19)/20); got != want {
		t.Errorf("%d bulk requests, want %d", got, want)
	}
	pe, _ := portEntity(e, "component", "component:default/artist-lookup")
	if d, _ := pe.Properties["description"].(string); !strings.HasSuffix(d, " (edited)") {
		t.Errorf("description %q", d)
	}
	st, _ := e.eng.Status(context.Background())
	if st.Guard.Threshold != 0.5 {
		t.Errorf("threshold %v after a mapping with entityDeletionThreshold 0.5", st.Guard.Threshold)
	}
	// The same mapping again changes nothing.
	if _, err := e.eng.ApplyMapping(context.Background(), m, "test"); !errors.Is(err, engine.ErrMappingUnchanged) {
		t.Fatalf("same mapping: %v", err)
	}
	if _, err := e.eng.ApplyMapping(context.Background(), nil, "test"); err == nil {
		t.Fatal("nil mapper accepted")
	}
}

// Subscribers see each resync start and end, with the next scheduled
// resync and at most 5 raw examples per kind; dry runs and verify passes
// are not reported.
func TestPassEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t), func(o *engine.Options) { o.ResyncInterval = time.Hour })
	var mu sync.Mutex
	var got []engine.PassEvent
	e.eng.Subscribe(func(ev engine.PassEvent) {
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	})
	rep := e.resync()
	if _, err := e.eng.Resync(context.Background(), "test", true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.eng.Verify(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].Finished || !got[1].Finished || got[0].Report.ID != rep.ID || got[1].Report.State != "succeeded" {
		t.Fatalf("events %+v", got)
	}
	if got[0].Report.State != "running" {
		t.Errorf("start event state %q", got[0].Report.State)
	}
	end := got[1]
	if end.Interval != time.Hour || end.Next.Before(time.Now().Add(50*time.Minute)) {
		t.Errorf("next %v interval %v", end.Next, end.Interval)
	}
	kinds := 0
	for kind, exs := range end.Examples {
		kinds++
		if len(exs) == 0 || len(exs) > engine.ExamplesPerKind {
			t.Errorf("kind %s: %d examples", kind, len(exs))
		}
		for _, x := range exs {
			if k, _ := x["kind"].(string); strings.ToLower(k) != kind {
				t.Errorf("example of kind %q under %q", k, kind)
			}
		}
	}
	if kinds < 5 || len(end.Examples["component"]) != engine.ExamplesPerKind {
		t.Errorf("examples for %d kinds, %d components", kinds, len(end.Examples["component"]))
	}
	if got[1].Examples == nil || got[0].Examples != nil {
		t.Error("examples belong to the end event only")
	}
}

// freshState gives the env a new, empty state file (the old one lost).
func (e *env) freshState() {
	e.t.Helper()
	st, err := state.Open(filepath.Join(e.t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = st.Close() })
	e.store, e.opts.Store = st, st
}

// Passes lists the recent passes oldest first, with the verify pass that
// follows a resync requested with verify.
func TestPassesFollowing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t))
	e.resync()
	id, _, err := e.eng.TriggerResync(context.Background(), "test", true)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the resync and its verify pass", func() bool {
		ps := e.eng.Passes()
		return slices.ContainsFunc(ps, func(r *engine.Report) bool { return r.Follows == id && r.State == "succeeded" })
	})
	ps := e.eng.Passes()
	for i := 1; i < len(ps); i++ {
		if ps[i].Started.Before(ps[i-1].Started) {
			t.Fatalf("passes out of order: %v before %v", ps[i-1].Started, ps[i].Started)
		}
	}
	if !slices.ContainsFunc(ps, func(r *engine.Report) bool { return r.ID == id && !r.Verify }) {
		t.Fatalf("resync %s missing from %d passes", id, len(ps))
	}
}
