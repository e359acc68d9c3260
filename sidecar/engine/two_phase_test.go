package engine_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/mapping"
)

// TestTwoPhaseResync checks what a resync reads from the catalog: the first
// (nothing owned) reads whole entities in one scan; later ones list
// versions and read by ref only the entities whose etag changed, so an
// unchanged catalog costs one listing and no body reads or Port writes.
func TestTwoPhaseResync(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t), func(o *engine.Options) { o.PageSize = 50 })
	n := e.cat.Len()
	pages := (n+49)/50 + 1 // a full last page may be followed by an empty one
	t.Logf("%d entities", n)

	e.cat.ResetRequests()
	first := e.resync()
	if got := e.cat.Requests(); got["by-refs"] != 0 || got["by-query"] > pages {
		t.Fatalf("first resync read %v; want whole pages only (≤ %d)", got, pages)
	}
	if first.Totals.Pushed == 0 {
		t.Fatalf("first resync pushed nothing: %+v", first.Totals)
	}

	type step struct {
		name        string
		edit        func(t *testing.T)
		restart     bool
		wantByRefs  int
		wantPushed  uint64
		wantPortTxt string // a component's description in Port afterwards
	}
	ref := "component:default/artist-lookup"
	steps := []step{
		{name: "unchanged", wantByRefs: 0, wantPushed: 0},
		{name: "one entity edited", edit: func(t *testing.T) {
			ent, ok := e.cat.Get(ref)
			if !ok {
				t.Fatalf("%s not in the catalog", ref)
			}
			ent["metadata"].(map[string]any)["description"] = "edited in Backstage"
			if err := e.cat.Upsert(ent); err != nil {
				t.Fatal(err)
			}
		}, wantByRefs: 1, wantPushed: 1, wantPortTxt: "edited in Backstage"},
		{name: "unchanged again", wantByRefs: 0, wantPushed: 0, wantPortTxt: "edited in Backstage"},
		// A new process knows from the state file that the raw examples
		// last handed on still name listed entities: it reads none.
		{name: "unchanged, new process", restart: true, wantByRefs: 0, wantPushed: 0, wantPortTxt: "edited in Backstage"},
	}
	for _, s := range steps {
		if s.edit != nil {
			s.edit(t)
		}
		if s.restart {
			e.stop()
			e.start()
		}
		e.cat.ResetRequests()
		w := e.writes()
		rep := e.resync()
		got := e.cat.Requests()
		if got["by-refs"] != s.wantByRefs || got["by-query"] > pages {
			t.Errorf("%s: catalog requests %v, want %d by-refs and ≤ %d by-query", s.name, got, s.wantByRefs, pages)
		}
		if rep.Totals.Pushed != s.wantPushed || rep.Totals.Seen != uint64(n) || rep.Totals.Failed != 0 {
			t.Errorf("%s: totals %+v, want %d pushed of %d seen", s.name, rep.Totals, s.wantPushed, n)
		}
		if s.wantPushed == 0 && e.writes() != w {
			t.Errorf("%s: %d Port writes", s.name, e.writes()-w)
		}
		if s.wantPortTxt != "" {
			pe, _ := portEntity(e, "component", ref)
			if d, _ := pe.Properties["description"].(string); d != s.wantPortTxt {
				t.Errorf("%s: description in Port %q, want %q", s.name, d, s.wantPortTxt)
			}
		}
	}
}

// TestTwoPhaseResyncDeletesAndExamples checks that a listing-only resync
// still deletes what left the catalog (nothing else) and reads in full only
// the entities whose etag changed; raw examples for Port's mapping editor
// come from what the engine read in full, and stay across resyncs.
func TestTwoPhaseResyncDeletesAndExamples(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t))
	var mu sync.Mutex
	var got []map[string][]catalog.Entity
	e.eng.Subscribe(func(ev engine.PassEvent) {
		if ev.Finished {
			mu.Lock()
			got = append(got, ev.Examples)
			mu.Unlock()
		}
	})
	e.resync()
	gone := "component:default/artist-lookup"
	if err := e.cat.Delete(gone); err != nil {
		t.Fatal(err)
	}
	owned := e.ownedTotal()
	e.cat.ResetRequests()
	rep := e.resync()
	if rep.Totals.Deleted != 1 || rep.Totals.Pushed != 0 {
		t.Fatalf("totals %+v, want 1 deleted and nothing pushed", rep.Totals)
	}
	if _, ok := portEntity(e, "component", gone); ok {
		t.Fatalf("%s still in Port", gone)
	}
	if now := e.ownedTotal(); now != owned-1 {
		t.Fatalf("owned %d -> %d, want one fewer", owned, now)
	}
	// The deletion changed the relations (and etags) of the entities that
	// pointed at it: one read by ref for them; the deleted entity was a raw
	// example: one read of another component to take its place.
	if n := e.cat.Requests()["by-refs"]; n != 2 {
		t.Fatalf("by-refs requests %d, want 2 (the entities whose relations changed, an example)", n)
	}
	if rep.Totals.Unchanged == 0 || rep.Totals.Seen != uint64(e.cat.Len()) {
		t.Fatalf("totals %+v, catalog %d", rep.Totals, e.cat.Len())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d pass events", len(got))
	}
	for _, kind := range []string{"component", "api", "group", "user", "system"} {
		if len(got[0][kind]) == 0 {
			t.Errorf("first resync: no raw example of kind %s (have %d kinds)", kind, len(got[0]))
			continue
		}
		if k, _ := got[0][kind][0]["kind"].(string); !strings.EqualFold(k, kind) {
			t.Errorf("example of %s has kind %q", kind, k)
		}
	}
	// The second resync read few entities in full; its event still carries
	// the examples read before, without the deleted entity.
	if n := len(got[1]["component"]); n != engine.ExamplesPerKind {
		t.Errorf("second resync: %d component examples, want %d", n, engine.ExamplesPerKind)
	}
	for _, ex := range got[1]["component"] {
		if ref, _ := catalog.RefOf(ex); ref.String() == gone {
			t.Errorf("second resync: the deleted %s is still an example", gone)
		}
	}
}

// After a mapping change every content version is stale: the resync reads
// whole pages in one scan (no listing plus reads by ref), pushes only the
// changed outputs, and the resync after it lists versions again.
func TestMappingChangeScansOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t), func(o *engine.Options) { o.PageSize = 50 })
	e.resync()
	e.resync() // two-phase from here on
	e.stop()
	doc := strings.Replace(string(mapping.DefaultMappingYAML()), "title: .metadata.title // .spec.profile.displayName // .metadata.name\n          blueprint: '\"group\"'",
		"title: '\"Team \" + (.metadata.title // .spec.profile.displayName // .metadata.name)'\n          blueprint: '\"group\"'", 1)
	cfg, err := mapping.Load([]byte(doc), "edited")
	if err != nil {
		t.Fatal(err)
	}
	if e.opts.Mapper, err = mapping.New(cfg, mapping.Options{Blueprints: mapping.DefaultBlueprints()}); err != nil {
		t.Fatal(err)
	}
	e.start()
	pages := (e.cat.Len()+49)/50 + 1
	for i, want := range []struct {
		pushed bool
		what   string
	}{{true, "after the mapping change"}, {false, "the next resync"}} {
		e.cat.ResetRequests()
		rep := e.resync()
		got := e.cat.Requests()
		if got["by-refs"] != 0 || got["by-query"] > pages {
			t.Errorf("%s: catalog requests %v, want whole pages only (≤ %d by-query)", want.what, got, pages)
		}
		if (rep.Totals.Pushed > 0) != want.pushed || rep.Totals.Failed != 0 {
			t.Errorf("%d %s: totals %+v", i, want.what, rep.Totals)
		}
		if !want.pushed && rep.Totals.Unchanged == 0 {
			t.Errorf("%s: nothing unchanged: %+v", want.what, rep.Totals)
		}
	}
}
