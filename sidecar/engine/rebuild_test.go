package engine_test

import (
	"context"
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

// withPortOwnership gives the engine Port's data-source listing of its own
// User-Agent as the ownership source, as production does.
func (e *env) withPortOwnership() {
	e.opts.OwnedInPort = func(ctx context.Context) iter.Seq2[port.Entity, error] {
		return e.portCl.ListDatasourceEntities(ctx, e.portCl.OwnDatasource())
	}
}

// A lost state file is rebuilt from Port before the first resync: an
// unchanged entity costs no write, one edited in Port is written once, one
// removed from the catalog meanwhile is deleted, and another data source's
// entity is never touched.
func TestOwnershipRebuiltFromPort(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loadExamples(t))
	e.resync()
	const edited, removed = "component:default/artist-lookup", "component:default/playback-order"
	if _, err := e.portEmu.PutEntity("component", port.Entity{Identifier: "not-ours", Title: "Not ours"}, "someone-else", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.portEmu.PutEntity("component", port.Entity{Identifier: edited, Properties: map[string]any{"description": "edited in Port"}}, "a-person", true); err != nil {
		t.Fatal(err)
	}
	if err := e.cat.Delete(removed); err != nil {
		t.Fatal(err)
	}
	e.stop()
	e.freshState()
	e.withPortOwnership()
	e.start()

	bulk, writes := e.bulkRequests(), e.portEmu.Requests().EntityWrites
	rep := e.resync()
	own := e.eng.Ownership()
	if own.State != "rebuilt" || own.Changed != 1 || own.Orphans != 1 || own.Adopted == 0 {
		t.Fatalf("ownership %+v", own)
	}
	if rep.Totals.Pushed != 1 || rep.Totals.Deleted != 1 || rep.Totals.Failed != 0 || rep.ExitCode() != 0 {
		t.Fatalf("first resync after the rebuild: %+v (%s) exit %d", rep.Totals, rep.DeletionsSkipped, rep.ExitCode())
	}
	if b, w := e.bulkRequests()-bulk, e.portEmu.Requests().EntityWrites-writes; b != 1 || w != 2 {
		t.Fatalf("%d bulk upserts and %d entity writes, want 1 and 2 (the edited entity, the removed one's delete)", b, w)
	}
	if pe, _ := portEntity(e, "component", edited); pe.Properties["description"] == "edited in Port" {
		t.Error("the entity edited in Port was not written back")
	}
	if _, ok := portEntity(e, "component", removed); ok {
		t.Error("the entity removed from the catalog meanwhile is still in Port")
	}
	if _, ok := portEntity(e, "component", "not-ours"); !ok {
		t.Error("another data source's entity was deleted")
	}
	writes = e.portEmu.Requests().EntityWrites
	if rep := e.resync(); rep.Totals.Pushed+rep.Totals.Deleted != 0 || e.portEmu.Requests().EntityWrites != writes {
		t.Fatalf("second resync: %+v, %d writes", rep.Totals, e.portEmu.Requests().EntityWrites-writes)
	}
	if st := e.eng.Ownership(); st.State != "rebuilt" {
		t.Fatalf("state %+v", st)
	}
}

// While Port's data-source listing fails, resyncs write but delete
// nothing and say why (exit code 4); once it answers, the rebuild runs
// before the next resync and the deletion happens.
func TestOwnershipUnknownDeletesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gen(t, 30, 21))
	e.resync()
	removed := e.cat.Refs()[3]
	if err := e.cat.Delete(removed); err != nil {
		t.Fatal(err)
	}
	e.stop()
	e.freshState()
	e.withPortOwnership()
	// The route answers 404, as if Port dropped the undocumented listing.
	e.portEmu.InjectFaults(porttest.FaultSpec{Status: 404, For: time.Hour, Route: "POST /v1/blueprints/entities/datasource-entities"})
	e.start()
	rep, err := e.eng.Resync(context.Background(), "test", false)
	if err != nil {
		t.Fatalf("resync: %v", err)
	}
	s := rep.Snapshot()
	if st := e.eng.Ownership(); st.State != "unknown" || !strings.Contains(st.Detail, "data source") {
		t.Fatalf("ownership %+v", st)
	}
	if s.Totals.Deleted != 0 || s.Refusal == nil || s.Refusal.Reason != "ownership_unknown" || rep.ExitCode() != engine.ExitRefused ||
		!strings.Contains(s.DeletionsSkipped, "ownership is not known") {
		t.Fatalf("resync with ownership unknown: %+v refusal %+v skipped %q exit %d", s.Totals, s.Refusal, s.DeletionsSkipped, rep.ExitCode())
	}
	kind, _, _ := strings.Cut(removed, ":")
	if _, ok := portEntity(e, kind, removed); !ok {
		t.Fatal("deleted while ownership was unknown")
	}
	e.portEmu.ClearFaults()
	s = e.resync()
	if st := e.eng.Ownership(); st.State != "rebuilt" || st.Orphans != 1 {
		t.Fatalf("ownership after the listing came back: %+v", st)
	}
	if s.Totals.Deleted != 1 || s.Refusal != nil {
		t.Fatalf("resync after the rebuild: %+v refusal %+v", s.Totals, s.Refusal)
	}
	if _, ok := portEntity(e, kind, removed); ok {
		t.Fatal("the removed entity survived the rebuild")
	}
}
