package engine_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
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

// refusedSetup is the engine on the catalog and Port emulators with the
// default mapping, except that components take their team from spec.team:
// a component whose spec.team is an object maps to a team Port's route
// schema refuses, so Port rejects the whole bulk request it is in (422).
type refusedSetup struct {
	cat    *catalogtest.Emulator
	emu    *porttest.Emulator
	mapper *mapping.Mapper
	eng    *engine.Engine
}

func newRefusedSetup(t *testing.T, load func(*catalogtest.Emulator)) *refusedSetup {
	t.Helper()
	ctx := context.Background()
	s := &refusedSetup{cat: catalogtest.New(catalogtest.Options{Token: "catalog-token", Seed: 3})}
	load(s.cat)
	catSrv := httptest.NewServer(s.cat)
	t.Cleanup(catSrv.Close)
	s.emu = porttest.New(porttest.Options{})
	portSrv := httptest.NewServer(s.emu)
	t.Cleanup(portSrv.Close)
	pc, err := port.New(port.Config{BaseURL: portSrv.URL, ClientID: s.emu.ClientID(), ClientSecret: s.emu.ClientSecret(),
		Version: "test", IntegrationIdentifier: "contract-test", RetryBaseDelay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := catalog.New(catalog.Config{BaseURL: catSrv.URL, Token: "catalog-token", Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mapping.EnsureBlueprints(ctx, pc, mapping.DefaultBlueprints()); err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(mapping.DefaultMappingYAML()), "blueprint: '\"component\"'\n",
		"blueprint: '\"component\"'\n          team: .spec.team\n", 1)
	mcfg, err := mapping.Load([]byte(doc), "test mapping")
	if err != nil {
		t.Fatal(err)
	}
	if s.mapper, err = mapping.New(mcfg, mapping.Options{Blueprints: mapping.DefaultBlueprints()}); err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	s.eng, err = engine.New(engine.Options{Store: store, Catalog: cc, Port: pc, Mapper: s.mapper,
		ManagedBlueprints: mcfg.ManagedBlueprints(), Policy: plan.PolicySync,
		CreateMissingRelatedEntities: mcfg.CreateMissingRelatedEntities, MergeEntities: mcfg.EnableMergeEntity,
		DeleteDependents: mcfg.DeleteDependentEntities, DeletionThreshold: mcfg.EntityDeletionThreshold,
		DeleteGracePeriod: time.Second, RetryBase: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func badComponent(name string) catalog.Entity {
	return catalog.Entity{"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
		"metadata": map[string]any{"name": name, "namespace": "default"},
		"spec":     map[string]any{"type": "service", "lifecycle": "production", "owner": "team-a", "team": map[string]any{"name": "team-a"}}}
}

// checkOnlyRefused asserts that status shows exactly one failed entity,
// badID, with Port's 422 about its team, that it is not in Port, and that
// every other entity of refs is.
func (s *refusedSetup) checkOnlyRefused(t *testing.T, badID string, refs []string) {
	t.Helper()
	if _, ok := s.emu.Entity("component", badID); ok {
		t.Fatal("the refused entity is in Port")
	}
	landed := 0
	for _, ref := range refs {
		ent, _ := s.cat.Get(ref)
		for _, m := range s.mapper.Map(context.Background(), ent).Entities {
			if m.Identifier == badID {
				continue
			}
			if _, ok := s.emu.Entity(m.Blueprint, m.Identifier); !ok {
				t.Errorf("%s (%s) did not land in Port", m.Identifier, m.Blueprint)
			}
			landed++
		}
	}
	if landed < 19 {
		t.Fatalf("only %d entities checked", landed)
	}
	// Status shows exactly that entity, with Port's status and message.
	st, err := s.eng.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Failures) != 1 {
		t.Fatalf("status lists %d failed entities, want 1: %+v", len(st.Failures), st.Failures)
	}
	f := st.Failures[0]
	if f.Identifier != badID || f.Status != 422 || f.Code != port.CodeInvalidRequest || !f.Permanent || !strings.Contains(f.Message, "team") {
		t.Fatalf("the failure of %s is %+v, want Port's 422 invalid_request about its team", badID, f)
	}
}

// TestResyncOneEntityPortRefuses: one invalid entity in a resync of the
// example catalog fails alone, with Port's message; every other entity
// lands.
func TestResyncOneEntityPortRefuses(t *testing.T) {
	t.Parallel()
	s := newRefusedSetup(t, func(c *catalogtest.Emulator) {
		if err := c.LoadFiles(examples...); err != nil {
			t.Fatal(err)
		}
		if err := c.Upsert(badComponent("bad-team")); err != nil {
			t.Fatal(err)
		}
	})
	rep, err := s.eng.RunOnce(context.Background(), false)
	if rep == nil {
		t.Fatalf("resync: %v", err)
	}
	snap := rep.Snapshot()
	if snap.Totals.Failed != 1 || snap.PerKind["component"] == nil || snap.PerKind["component"].Failed != 1 {
		t.Fatalf("want exactly one failed component, got totals %+v (component %+v)", snap.Totals, snap.PerKind["component"])
	}
	s.checkOnlyRefused(t, "component:default/bad-team", s.cat.Refs())
	// Isolating it cost a few requests, not one per entity.
	if n := s.emu.Requests().ByStatus[422]; n > 4 {
		t.Errorf("%d requests refused with 422 while isolating one entity", n)
	}
}

// TestChangePathOneEntityPortRefuses: the same through published changes,
// 20 components in one batch of which one is invalid.
func TestChangePathOneEntityPortRefuses(t *testing.T) {
	t.Parallel()
	var ents []catalog.Entity
	for i := range 20 {
		e := badComponent(fmt.Sprintf("svc-%02d", i))
		if i != 11 {
			delete(e["spec"].(map[string]any), "team")
		}
		ents = append(ents, e)
	}
	s := newRefusedSetup(t, func(c *catalogtest.Emulator) {
		if err := c.Upsert(ents...); err != nil {
			t.Fatal(err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.eng.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	var changes []state.Change
	for _, e := range ents {
		changes = append(changes, upsertChange(t, e))
	}
	if _, err := s.eng.Publish(ctx, changes, false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(s.emu.Entities("component")) < 19 || s.failures() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %d components in Port, %d failures", len(s.emu.Entities("component")), s.failures())
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.checkOnlyRefused(t, "component:default/svc-11", s.cat.Refs())
}

func (s *refusedSetup) failures() int {
	st, err := s.eng.Status(context.Background())
	if err != nil {
		return 0
	}
	return len(st.Failures)
}
