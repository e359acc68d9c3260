package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
	"github.com/portbridge/portbridge/sidecar/state"
)

// scanFault makes the catalog's by-query pages lie the way a broken proxy
// or a catalog bug would: a page without a next cursor mid-scan, or a
// totalItems that does not match what the pages hold.
type scanFault struct {
	dropCursorOnPage int // 1-based; 0 off
	totalSkew        int
	pages            atomic.Int32
}

// scanFaults wraps the catalog emulator with the scan faults of e.
func (e *env) scanFaults(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := e.fault.Load()
		if f == nil || !strings.HasSuffix(r.URL.Path, "/entities/by-query") {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if rec.Code == http.StatusOK {
			var page map[string]any
			if err := json.Unmarshal(body, &page); err == nil {
				n := int(f.pages.Add(1))
				if f.dropCursorOnPage == n {
					delete(page["pageInfo"].(map[string]any), "nextCursor")
				}
				if t, ok := page["totalItems"].(float64); ok {
					page["totalItems"] = t + float64(f.totalSkew)
				}
				body, _ = json.Marshal(page)
			}
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		_, _ = io.Copy(w, bytes.NewReader(body))
	})
}

func gen(t *testing.T, n int, seed int64) func(*catalogtest.Emulator) {
	return func(c *catalogtest.Emulator) {
		if err := c.UpsertAll(catalogtest.Generate(n, seed)); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) portTotal() int {
	n := 0
	for _, bp := range e.opts.ManagedBlueprints {
		n += len(e.portEmu.Entities(bp))
	}
	return n
}

// A resync deletes only after a scan proven complete: a page without a
// cursor mid-way, a count that differs from totalItems, and a failing page
// each delete nothing and say why; the next complete scan deletes.
func TestIncompleteScansDeleteNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		inject  func(e *env)
		reason  string
		refusal string
	}{
		{"a page without a next cursor", func(e *env) { e.fault.Store(&scanFault{dropCursorOnPage: 2}) }, "but the catalog reports totalItems", "incomplete_scan"},
		{"a count that differs from totalItems", func(e *env) { e.fault.Store(&scanFault{totalSkew: 40}) }, "totalItems", "incomplete_scan"},
		{"a page that fails", func(e *env) { e.cat.FailAfter(2, 500) }, "did not complete", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, gen(t, 400, 7), func(o *engine.Options) { o.PageSize = 50 })
			e.resync()
			owned, inPort := e.ownedTotal(), e.portTotal()
			if err := e.cat.Delete(e.cat.Refs()[:20]...); err != nil {
				t.Fatal(err)
			}
			tt.inject(e)
			rep, err := e.eng.Resync(context.Background(), "test", false)
			s := rep.Snapshot()
			if err == nil || s.State != "failed" {
				t.Fatalf("an incomplete scan succeeded: %v %s", err, s.State)
			}
			if s.Totals.Deleted != 0 || e.portTotal() != inPort || e.ownedTotal() != owned {
				t.Fatalf("deleted %d (Port %d→%d, owned %d→%d)", s.Totals.Deleted, inPort, e.portTotal(), owned, e.ownedTotal())
			}
			if !strings.Contains(s.DeletionsSkipped, tt.reason) {
				t.Fatalf("reason %q lacks %q", s.DeletionsSkipped, tt.reason)
			}
			if tt.refusal != "" {
				if s.Refusal == nil || s.Refusal.Reason != tt.refusal || s.Refused == 0 || rep.ExitCode() != engine.ExitRefused {
					t.Fatalf("refusal %+v, refused %d, exit %d", s.Refusal, s.Refused, rep.ExitCode())
				}
				st, _ := e.eng.Status(context.Background())
				if st.Guard.Last == nil || st.Guard.Last.Reason != tt.refusal || st.Guard.Refused["resync"] == 0 {
					t.Fatalf("status guard %+v", st.Guard)
				}
			} else if rep.ExitCode() != engine.ExitFailed {
				t.Fatalf("exit %d", rep.ExitCode())
			}
			e.fault.Store(nil)
			e.cat.FailAfter(-1, 0)
			if rep := e.resync(); rep.Totals.Deleted != 20 {
				t.Fatalf("the complete resync deleted %d, want 20", rep.Totals.Deleted)
			}
		})
	}
}

// Change-path deletions pass the same guard, weighed over a window and
// together with the deletions announced in the queue: deleting 95% of the
// owned entities through notifications deletes nothing.
func TestChangePathDeletionGuard(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gen(t, 200, 9))
	e.resync()
	inPort := e.portTotal()
	refs := e.cat.Refs()
	victims := refs[:len(refs)*95/100]
	if err := e.cat.Delete(victims...); err != nil {
		t.Fatal(err)
	}
	var changes []state.Change
	for _, r := range victims {
		changes = append(changes, deleteChange(r))
	}
	e.publish(changes...)
	eventually(t, "the deletions to be handled", func() bool { return e.store.QueueDepth() == 0 })
	if got := e.portTotal(); got != inPort {
		var missing []string
		for _, r := range refs {
			k := strings.SplitN(r, ":", 2)[0]
			if _, ok := portEntity(e, k, r); !ok {
				missing = append(missing, r)
			}
		}
		recs, found, _ := e.store.Refs(missing)
		t.Fatalf("the change path deleted %d of %d entities: %v; Port requests %v; records %+v %v", inPort-got, inPort, missing, e.portEmu.Requests().ByRoute, recs, found)
	}
	st, err := e.eng.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Guard.Last == nil || st.Guard.Last.Path != "change" || st.Guard.Last.Reason != "threshold" || st.Guard.Refused["change"] != uint64(len(victims)) {
		t.Fatalf("guard status %+v last %+v", st.Guard, st.Guard.Last)
	}
	// The refused entities stay owned: a resync proposes them again and
	// the guard refuses there too.
	rep, _ := e.eng.Resync(context.Background(), "test", false)
	if s := rep.Snapshot(); s.Refused != len(victims) || s.Totals.Deleted != 0 {
		t.Fatalf("resync after refused change-path deletions: refused %d deleted %d", s.Refused, s.Totals.Deleted)
	}
}

// A few deletions through notifications are not held back.
func TestChangePathDeletionsWithinThreshold(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gen(t, 100, 10))
	e.resync()
	inPort := e.portTotal()
	refs := e.cat.Refs()[:5]
	if err := e.cat.Delete(refs...); err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		e.publish(deleteChange(r))
	}
	eventually(t, "the deletions", func() bool { return e.portTotal() == inPort-5 })
}

// entityDeletionThreshold 0 means no deletion is ever allowed, on every
// path; the refusal says so.
func TestThresholdZeroForbidsDeletion(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gen(t, 60, 12), func(o *engine.Options) { o.DeletionThreshold = 0 })
	e.resync()
	inPort := e.portTotal()
	refs := e.cat.Refs()[:2]
	if err := e.cat.Delete(refs...); err != nil {
		t.Fatal(err)
	}
	rep, _ := e.eng.Resync(context.Background(), "test", false)
	s := rep.Snapshot()
	if s.Totals.Deleted != 0 || s.Refusal == nil || s.Refusal.Reason != "disabled" || !strings.Contains(s.DeletionsSkipped, "entityDeletionThreshold is 0") {
		t.Fatalf("deleted %d refusal %+v", s.Totals.Deleted, s.Refusal)
	}
	if rep.ExitCode() != engine.ExitRefused {
		t.Fatalf("exit code %d", rep.ExitCode())
	}
	e.publish(deleteChange(refs[0]))
	eventually(t, "the deletion to be handled", func() bool { return e.store.QueueDepth() == 0 })
	if e.portTotal() != inPort {
		t.Fatal("the change path deleted with threshold 0")
	}
	if _, err := engine.New(engine.Options{Store: e.store, Catalog: e.catCl, Port: e.portCl, Mapper: e.opts.Mapper, DeletionThreshold: 1.5}); err == nil {
		t.Fatal("a threshold above 1 was accepted")
	}
}

// byNameMapping identifies components by metadata.name, as older Port
// mappings did: two components of one name in different namespaces map to
// one Port entity.
const byNameMapping = `
createMissingRelatedEntities: true
resources:
  - kind: component
    selector:
      query: "true"
    port:
      entity:
        mappings:
          identifier: .metadata.name
          title: .metadata.name
          blueprint: '"component"'
          properties:
            description: .metadata.namespace
`

func byName(t *testing.T) envOption {
	return func(o *engine.Options) {
		cfg, err := mapping.Load([]byte(byNameMapping), "by-name")
		if err != nil {
			t.Fatal(err)
		}
		m, err := mapping.New(cfg, mapping.Options{Blueprints: mapping.DefaultBlueprints()})
		if err != nil {
			t.Fatal(err)
		}
		o.Mapper = m
		o.ManagedBlueprints = []string{"component"}
	}
}

func component(ns, name string) map[string]any {
	return map[string]any{"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
		"metadata": map[string]any{"name": name, "namespace": ns}, "spec": map[string]any{"type": "service", "owner": "team-a", "lifecycle": "production"}}
}

// Two refs mapping to one Port key are reported, the first in order
// writes it, and deleting one ref keeps the entity the other still needs,
// on the change path and in a resync.
func TestConflictingRefsKeepTheSharedEntity(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"change", "resync"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(c *catalogtest.Emulator) {
				if err := c.Upsert(component("default", "shared"), component("other", "shared"), component("default", "alone")); err != nil {
					t.Fatal(err)
				}
			}, byName(t))
			rep := e.resync()
			if rep.ConflictCount != 1 || rep.Conflicts[0].Identifier != "shared" || rep.Conflicts[0].Winner != "component:default/shared" {
				t.Fatalf("conflicts %d %+v", rep.ConflictCount, rep.Conflicts)
			}
			if got, _ := portEntity(e, "component", "shared"); got.Properties["description"] != "default" {
				t.Fatalf("the winner's content is not in Port: %+v", got.Properties)
			}
			st, _ := e.eng.Status(context.Background())
			if len(st.Conflicts) == 0 || len(st.Conflicts[0].Refs) != 2 {
				t.Fatalf("status conflicts %+v", st.Conflicts)
			}
			if rep := e.resync(); rep.ConflictCount != 0 && rep.Totals.Pushed != 0 {
				t.Fatalf("a second resync wrote %d", rep.Totals.Pushed)
			}
			// The winner goes: the entity stays (the other ref still maps
			// to it) and takes the other's content.
			if err := e.cat.Delete("component:default/shared"); err != nil {
				t.Fatal(err)
			}
			if path == "change" {
				e.publish(deleteChange("component:default/shared"))
				eventually(t, "the deletion handled", func() bool { return e.store.QueueDepth() == 0 })
			} else {
				e.resync()
			}
			eventually(t, "the other ref's content in Port", func() bool {
				got, ok := portEntity(e, "component", "shared")
				return ok && got.Properties["description"] == "other" && e.store.QueueDepth() == 0
			})
			if _, ok := portEntity(e, "component", "shared"); !ok {
				t.Fatal("the shared entity was deleted while another ref maps to it")
			}
			// The last ref goes: now it is deleted.
			if err := e.cat.Delete("component:other/shared"); err != nil {
				t.Fatal(err)
			}
			if path == "change" {
				e.publish(deleteChange("component:other/shared"))
			} else {
				e.resync()
			}
			eventually(t, "the entity gone", func() bool { _, ok := portEntity(e, "component", "shared"); return !ok })
			if _, ok := portEntity(e, "component", "alone"); !ok {
				t.Fatal("an unrelated entity was deleted")
			}
		})
	}
}

// strictLifecycle makes Port refuse components whose lifecycle is not one
// of two values (a blueprint enum), as a real Port would with a 422.
func strictLifecycle(t *testing.T, e *env) {
	bp, ok := e.portEmu.Blueprint("component")
	if !ok {
		t.Fatal("no component blueprint")
	}
	p := bp.Schema.Properties["lifecycle"]
	p.Enum = []any{"production", "experimental"}
	bp.Schema.Properties["lifecycle"] = p
	if err := e.portEmu.PutBlueprint(bp); err != nil {
		t.Fatal(err)
	}
}

// A permanent refusal (422) is parked with Port's message, not retried
// forever; the next resync tries again and only that entity fails.
func TestPermanentFailureIsParked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gen(t, 40, 13))
	e.resync()
	strictLifecycle(t, e)
	bad := component("default", "bad-lifecycle")
	bad["spec"].(map[string]any)["lifecycle"] = "retired"
	if err := e.cat.Upsert(bad); err != nil {
		t.Fatal(err)
	}
	e.publish(upsertChange(t, bad))
	eventually(t, "the change handled", func() bool { return e.store.QueueDepth() == 0 })
	st, err := e.eng.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Parked != 1 || len(st.Failures) == 0 {
		t.Fatalf("parked %d failures %+v", st.Parked, st.Failures)
	}
	f := st.Failures[0]
	if f.Ref != "component:default/bad-lifecycle" || f.Status != 422 || !f.Permanent || f.Message == "" || f.Path != "change" {
		t.Fatalf("failure %+v", f)
	}
	if !strings.Contains(st.LastError, "422") || st.LastErrorAt.IsZero() {
		t.Fatalf("last error %q at %v", st.LastError, st.LastErrorAt)
	}
	writes := e.writes()
	time.Sleep(300 * time.Millisecond) // retries would come every 20-200 ms
	if e.writes() != writes {
		t.Fatalf("a parked entity was retried: %d writes", e.writes()-writes)
	}
	// A resync tries again: that entity fails, everything else is fine and
	// deletions are not blocked by it.
	if err := e.cat.Delete(e.cat.Refs()[0]); err != nil {
		t.Fatal(err)
	}
	rep, _ := e.eng.Resync(context.Background(), "test", false)
	s := rep.Snapshot()
	if s.Totals.Failed != 1 || s.Totals.Deleted != 1 || rep.ExitCode() != engine.ExitEntityFailures {
		t.Fatalf("resync with a parked entity: %+v exit %d (%s)", s.Totals, rep.ExitCode(), s.Err)
	}
	// Fixed in the catalog: the next resync writes it and unparks it.
	bad["spec"].(map[string]any)["lifecycle"] = "production"
	if err := e.cat.Upsert(bad); err != nil {
		t.Fatal(err)
	}
	e.resync()
	if st, _ := e.eng.Status(context.Background()); st.Parked != 0 {
		t.Fatalf("still parked: %d", st.Parked)
	}
}

// A full snapshot stored before a crash is reconciled after the restart.
func TestSnapshotRequestSurvivesRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gen(t, 30, 14), func(o *engine.Options) { o.ResyncOnStart = false })
	e.stop()
	ent, _ := e.cat.Get(e.cat.Refs()[0])
	if _, _, err := e.store.Enqueue(context.Background(), []state.Change{upsertChange(t, ent)}, true); err != nil {
		t.Fatal(err)
	}
	e.start()
	eventually(t, "the snapshot resync", func() bool {
		st, _ := e.eng.Status(context.Background())
		return st.Last != nil && st.Last.Trigger == "snapshot" && st.Last.State == "succeeded"
	})
	if _, pending, _ := e.store.SnapshotPending(); pending {
		t.Fatal("the snapshot flag was not cleared")
	}
}

// Shutdown finishes in-flight work or gives up within its bound, leaving
// unapplied changes in the queue.
func TestShutdownIsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gen(t, 20, 15), func(o *engine.Options) { o.ShutdownTimeout = 500 * time.Millisecond; o.ResyncOnStart = false })
	e.portEmu.InjectFaults(portFaultLatency(3 * time.Second))
	ent, _ := e.cat.Get(e.cat.Refs()[0])
	ent["metadata"].(map[string]any)["description"] = "slow"
	e.publish(upsertChange(t, ent))
	time.Sleep(100 * time.Millisecond) // the write is in flight
	start := time.Now()
	e.stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("shutdown took %s with a bound of 500ms", took)
	}
	if e.store.QueueDepth() != 1 {
		t.Fatalf("queue depth %d after an abandoned write, want 1", e.store.QueueDepth())
	}
}

// A state file deleted underneath stops acknowledgements and readiness
// within seconds, and Run ends with an error.
func TestDeletedStateFileStopsAcknowledging(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gen(t, 10, 16), func(o *engine.Options) { o.FileCheckInterval = 50 * time.Millisecond })
	e.runMayFail = true
	eventually(t, "ready", func() bool { return e.eng.Ready(context.Background()) == nil })
	if err := os.Remove(e.store.Path()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "not ready", func() bool { return e.eng.Ready(context.Background()) != nil })
	ent, _ := e.cat.Get(e.cat.Refs()[0])
	if _, err := e.eng.Publish(context.Background(), []state.Change{upsertChange(t, ent)}, false); err == nil {
		t.Fatal("a change was acknowledged after the state file was deleted")
	}
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end")
	}
	if e.runErr == nil || !strings.Contains(e.runErr.Error(), "deleted") {
		t.Fatalf("Run returned %v", e.runErr)
	}
	e.cancel = nil
}

func portFaultLatency(d time.Duration) porttest.FaultSpec {
	return porttest.FaultSpec{Latency: d, Route: "POST /v1/blueprints/{b}/entities/bulk"}
}
