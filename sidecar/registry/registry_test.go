package registry_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/plan"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
	"github.com/portbridge/portbridge/sidecar/registry"
	"github.com/portbridge/portbridge/sidecar/state"
)

// setup is a registry on a real state file and the Port emulator.
func setup(t *testing.T) (*registry.Registry, *state.Store, *porttest.Emulator) {
	t.Helper()
	emu := porttest.New(porttest.Options{})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	pc, err := port.New(port.Config{BaseURL: srv.URL, ClientID: emu.ClientID(), ClientSecret: emu.ClientSecret(), RetryBaseDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mapping.EnsureBlueprints(context.Background(), pc, mapping.DefaultBlueprints()); err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	reg, err := registry.New(registry.Options{Store: store, Provider: pc, RetryWindow: time.Millisecond, FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { reg.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return reg, store, emu
}

func write(action plan.Action, ref, id string, hash uint64, team any) plan.Change {
	return plan.Change{Action: action, Key: plan.Key{Blueprint: "component", Identifier: id}, Ref: ref, Kind: "component", Hash: hash,
		Entity: port.Entity{Identifier: id, Title: id, Team: team}}
}

func apply(t *testing.T, reg *registry.Registry, ch *plan.Changes) (registry.Outcome, map[string]registry.RefOutcome) {
	t.Helper()
	refs := map[string]registry.RefOutcome{}
	done := make(chan registry.Outcome, 1)
	reg.Apply(context.Background(), ch, registry.ApplyOptions{OnRef: func(o registry.RefOutcome) { refs[o.Ref] = o }}, func(o registry.Outcome) { done <- o })
	select {
	case o := <-done:
		return o, refs
	case <-time.After(20 * time.Second):
		t.Fatal("Apply did not finish")
	}
	return registry.Outcome{}, nil
}

func record(t *testing.T, store *state.Store, ref string) (state.RefRecord, bool) {
	t.Helper()
	recs, found, err := store.Refs([]string{ref})
	if err != nil {
		t.Fatal(err)
	}
	return recs[0], found[0]
}

func TestApply(t *testing.T) {
	t.Parallel()
	reg, store, emu := setup(t)
	const a, b = "component:default/a", "component:default/b"
	at := time.UnixMilli(1_700_000_000_000)

	// Writes are committed for what Port confirmed; a claim is recorded
	// with hash 0 and never sent.
	out, refs := apply(t, reg, &plan.Changes{
		Create:   []plan.Change{write(plan.Create, a, "x", 11, nil), write(plan.Create, a, "y", 12, nil)},
		Claim:    []plan.Change{{Action: plan.Claim, Key: plan.Key{Blueprint: "component", Identifier: "x"}, Ref: b, Kind: "component"}},
		Observed: map[string]time.Time{a: at, b: at},
	})
	if out.Created != 2 || out.Claimed != 1 || len(out.Failures) != 0 || refs[a].Written != 2 || len(refs) != 2 {
		t.Fatalf("outcome %+v refs %+v", out, refs)
	}
	rec, _ := record(t, store, a)
	if len(rec.Outputs) != 2 || !rec.ObservedAt.Equal(at) {
		t.Fatalf("record of a %+v", rec)
	}
	if rec, _ := record(t, store, b); len(rec.Outputs) != 1 || rec.Outputs[0].Hash != 0 {
		t.Fatalf("claim of b %+v", rec)
	}
	if _, ok := emu.Entity("component", "x"); !ok {
		t.Fatal("x not in Port")
	}

	// A ref whose new write fails keeps what it owned: its deletion is not
	// carried out, its observation not recorded, and the failure carries
	// Port's answer.
	out, refs = apply(t, reg, &plan.Changes{
		Update:   []plan.Change{write(plan.Update, a, "x", 21, map[string]any{"not": "a team"})},
		Delete:   []plan.Change{{Action: plan.Delete, Key: plan.Key{Blueprint: "component", Identifier: "y"}, Ref: a, Kind: "component"}},
		Observed: map[string]time.Time{a: at.Add(time.Hour)},
	})
	if len(out.Failures) != 1 || out.Failures[0].Status != 422 || !out.Failures[0].Permanent || out.Deleted != 0 || len(refs[a].Failures) != 1 {
		t.Fatalf("outcome %+v refs %+v", out, refs)
	}
	rec, _ = record(t, store, a)
	if len(rec.Outputs) != 2 || !rec.ObservedAt.Equal(at) {
		t.Fatalf("a failed write changed the record: %+v", rec)
	}
	if _, ok := emu.Entity("component", "y"); !ok {
		t.Fatal("y was deleted although a's write failed")
	}

	// Deletions follow successful writes; releases drop the claim without
	// touching Port; a forgotten ref's record goes once it owns nothing.
	out, refs = apply(t, reg, &plan.Changes{
		Update:  []plan.Change{write(plan.Update, a, "x", 31, nil)},
		Delete:  []plan.Change{{Action: plan.Delete, Key: plan.Key{Blueprint: "component", Identifier: "y"}, Ref: a, Kind: "component"}},
		Release: []plan.Change{{Action: plan.Release, Key: plan.Key{Blueprint: "component", Identifier: "x"}, Ref: b, Kind: "component"}},
		Forget:  []string{b},
	})
	if out.Updated != 1 || out.Deleted != 1 || out.Released != 1 || refs[a].Deleted != 1 || refs[b].Released != 1 {
		t.Fatalf("outcome %+v refs %+v", out, refs)
	}
	if _, ok := emu.Entity("component", "y"); ok {
		t.Fatal("y still in Port")
	}
	if _, ok := emu.Entity("component", "x"); !ok {
		t.Fatal("a release deleted x")
	}
	if _, found := record(t, store, b); found {
		t.Fatal("b's record kept after it released its only claim")
	}
	if rec, _ := record(t, store, a); len(rec.Outputs) != 1 || rec.Outputs[0].Hash != 31 {
		t.Fatalf("record of a %+v", rec)
	}

	// Parking records Port's reason; a later successful write unparks.
	if err := reg.Park(a, registry.Failure{Key: plan.Key{Blueprint: "component", Identifier: "x"}, Status: 422, Message: "bad"}); err != nil {
		t.Fatal(err)
	}
	if n, _ := store.ParkedCount(); n != 1 {
		t.Fatalf("parked %d", n)
	}
	apply(t, reg, &plan.Changes{Update: []plan.Change{write(plan.Update, a, "x", 41, nil)}})
	if n, _ := store.ParkedCount(); n != 0 {
		t.Fatalf("still parked after a successful write: %d", n)
	}

	// An empty plan finishes at once.
	if out, refs := apply(t, reg, &plan.Changes{}); len(refs) != 0 || out.Created+out.Updated+out.Deleted != 0 {
		t.Fatalf("empty plan %+v", out)
	}
}

// Lazy writes wait for a full batch or Flush; slots bound what is in
// flight.
func TestLazyWritesWaitForFlush(t *testing.T) {
	t.Parallel()
	reg, _, emu := setup(t)
	slots := make(chan struct{}, 100)
	done := make(chan registry.Outcome, 1)
	ch := &plan.Changes{}
	for i := range 5 {
		id := string(rune('a' + i))
		ch.Create = append(ch.Create, write(plan.Create, "component:default/"+id, id, uint64(i+1), nil))
	}
	reg.Apply(context.Background(), ch, registry.ApplyOptions{Lazy: true, Slots: slots}, func(o registry.Outcome) { done <- o })
	time.Sleep(50 * time.Millisecond)
	if n := len(emu.Entities("component")); n != 0 || len(slots) != 5 {
		t.Fatalf("lazy writes sent before a flush: %d in Port, %d slots held", n, len(slots))
	}
	reg.Flush(context.Background())
	select {
	case o := <-done:
		if o.Created != 5 || len(slots) != 0 {
			t.Fatalf("outcome %+v, %d slots held", o, len(slots))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("flush did not send")
	}
}

// countingStore is the real state store, counting its commits.
type countingStore struct {
	*state.Store
	commits atomic.Int64
}

func (c *countingStore) Commit(w state.Write) error {
	c.commits.Add(1)
	return c.Store.Commit(w)
}

// Refs whose plan writes nothing to Port (new content versions,
// observations, releases) are recorded in one commit per Apply, not one
// each: a resync after a mapping change that left every hash equal, or
// after an ownership rebuild, records a version for every entity.
func TestRecordOnlyRefsCommitTogether(t *testing.T) {
	t.Parallel()
	_, store, emu := setup(t)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	pc, err := port.New(port.Config{BaseURL: srv.URL, ClientID: emu.ClientID(), ClientSecret: emu.ClientSecret()})
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: store}
	reg, err := registry.New(registry.Options{Store: cs, Provider: pc})
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	ch := &plan.Changes{Versions: map[string]uint64{}, Observed: map[string]time.Time{}}
	now := time.Now().Truncate(time.Millisecond)
	for i := range n {
		ref := fmt.Sprintf("component:default/c%03d", i)
		ch.Versions[ref] = uint64(1000 + i)
		ch.Observed[ref] = now
	}
	out, refs := apply(t, reg, ch)
	if len(refs) != n || len(out.Failures) != 0 {
		t.Fatalf("%d refs reported, failures %v", len(refs), out.Failures)
	}
	if got := cs.commits.Load(); got != 1 {
		t.Fatalf("%d commits for %d record-only refs, want 1", got, n)
	}
	for i := range n {
		ref := fmt.Sprintf("component:default/c%03d", i)
		if rec, ok := record(t, store, ref); !ok || rec.Version != uint64(1000+i) || !rec.ObservedAt.Equal(now) {
			t.Fatalf("%s: %+v (found %v)", ref, rec, ok)
		}
	}
}
