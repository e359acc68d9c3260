// Package e2e is the end-to-end test of the whole product with the real
// thing: a real Backstage catalog backend with the port-bridge module from
// client/backstage installed, the portbridge sidecar binary as a child
// process, and the Port emulator. Catalog changes go in through the
// harness's full-mutation entity provider and must come out in Port.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portbridge/portbridge/client"
	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
	backstagetest "github.com/portbridge/portbridge/test/backstage"
)

const (
	// pollInterval is the module's portBridge.pollInterval in this test.
	pollInterval = time.Second
	// deleteGrace is the sidecar's sync.deleteGracePeriod in this test.
	deleteGrace = 2 * time.Second
	// quietWindow is how long an unchanged catalog must cause no Port write.
	quietWindow = time.Minute
	// outage is how long the sidecar is down while the catalog changes.
	outage = 30 * time.Second

	sidecarToken = "e2e-sidecar-token-0123456789"
	// catalogPoll and portPoll are how often the test looks at the catalog
	// API and at the Port emulator while it waits for one change.
	catalogPoll = 20 * time.Millisecond
	portPoll    = 5 * time.Millisecond
	// changeDeadline bounds the wait for one change on either side.
	changeDeadline = 30 * time.Second
	// portPollInterval is the sidecar's port.integration.pollInterval: how
	// often it reads its mapping and resync requests from Port.
	portPollInterval = 2 * time.Second
	// integrationID is the sidecar's integration in Port (the default).
	integrationID = "portbridge"
)

// repoRoot is the repository root (two levels above this file).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// catalogEntities is the catalog content the test drives through the
// harness's full-mutation provider: one owner group and components, each
// with a description (the property the default mapping copies to Port).
type catalogEntities struct {
	descriptions map[string]string // component name -> description
}

func newCatalog() *catalogEntities {
	return &catalogEntities{descriptions: map[string]string{}}
}

func (c *catalogEntities) set(name, description string) { c.descriptions[name] = description }
func (c *catalogEntities) remove(name string)           { delete(c.descriptions, name) }

// entities renders the provider content (sorted, so that equal content
// gives an equal file and the provider does not re-apply it).
func (c *catalogEntities) entities() []map[string]any {
	out := []map[string]any{{
		"apiVersion": "backstage.io/v1alpha1",
		"kind":       "Group",
		"metadata":   map[string]any{"name": "team-a", "description": "the owners"},
		"spec":       map[string]any{"type": "team", "children": []any{}},
	}}
	names := make([]string, 0, len(c.descriptions))
	for n := range c.descriptions {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		out = append(out, map[string]any{
			"apiVersion": "backstage.io/v1alpha1",
			"kind":       "Component",
			"metadata":   map[string]any{"name": n, "description": c.descriptions[n]},
			"spec":       map[string]any{"type": "service", "lifecycle": "production", "owner": "team-a"},
		})
	}
	return out
}

// want is the Port state the catalog content implies: identifier ->
// description, for the blueprints the test compares.
func (c *catalogEntities) want() map[string]string {
	w := map[string]string{"group:default/team-a": "the owners"}
	for n, d := range c.descriptions {
		w["component:default/"+n] = d
	}
	return w
}

// comparedBlueprints are the Port blueprints whose content must equal the
// catalog's.
var comparedBlueprints = []string{"component", "group"}

func portState(emu *porttest.Emulator) map[string]string {
	got := map[string]string{}
	for _, bp := range comparedBlueprints {
		for _, e := range emu.Entities(bp) {
			id, _ := e.Identifier.(string)
			d, _ := e.Properties["description"].(string)
			got[id] = d
		}
	}
	return got
}

// TestEndToEnd runs the phases in one Backstage instance (its start costs
// about 10 s): initial sync; adds, updates and deletes with their latency
// from catalog to Port; a quiet minute without Port writes; a 30 s sidecar
// outage during changes.
func TestEndToEnd(t *testing.T) {
	backstagetest.Require(t)
	began := time.Now()
	moduleDir := buildModule(t, filepath.Join(repoRoot(), "client", "backstage"))
	bin := buildSidecar(t)

	emu := porttest.New(porttest.Options{})
	portSrv := httptest.NewServer(emu)
	t.Cleanup(portSrv.Close)

	// The order problem: the module needs the sidecar's URL at Backstage's
	// start, the sidecar needs Backstage's URL. The sidecar's address is
	// picked first; Backstage starts with it (the module retries until the
	// sidecar answers), then the sidecar starts with Backstage's URL.
	sidecarAddr := freeAddr(t)
	tmp := t.TempDir()
	bsConfig := filepath.Join(tmp, "app-config.portbridge.yaml")
	writeFile(t, bsConfig, fmt.Sprintf(`portBridge:
  sidecarUrl: http://%s
  token: %s
  pollInterval: { seconds: %d }
`, sidecarAddr, sidecarToken, int(pollInterval/time.Second)))

	cat := newCatalog()
	for i := 1; i <= 5; i++ {
		cat.set(fmt.Sprintf("svc-%d", i), fmt.Sprintf("service %d, first version", i))
	}
	initial := cat.entities()
	bsStart := time.Now()
	bs := backstagetest.Start(t, backstagetest.Options{
		Entities:     initial,
		ExpectTotal:  len(initial),
		ExtraModules: []string{moduleDir},
		ConfigFiles:  []string{bsConfig},
	})
	t.Logf("real Backstage with the module ready in %s at %s", time.Since(bsStart).Round(time.Millisecond), bs.URL)

	sc := &sidecar{t: t, bin: bin, addr: sidecarAddr, dir: tmp}
	sc.writeConfig(bs, portSrv.URL)
	sc.start()
	cat0 := &catalogAPI{url: bs.URL, token: bs.Token}

	if !t.Run("initial sync", func(t *testing.T) {
		start := time.Now()
		waitConverged(t, emu, sc, cat, 2*time.Minute)
		t.Logf("initial sync of %d entities converged %s after the sidecar started", len(cat.want()), time.Since(start).Round(time.Millisecond))
		// The sidecar's resync on start may have done the work; the
		// module's first poll must still deliver its full snapshot.
		n := waitAccepted(t, sc, len(cat.want()), time.Minute)
		t.Logf("the module's first poll delivered %g changes %s after the sidecar started", n, time.Since(start).Round(time.Millisecond))
		waitConverged(t, emu, sc, cat, time.Minute)
	}) {
		return
	}

	var upserts, deletes []time.Duration
	if !t.Run("add update delete", func(t *testing.T) {
		rounds := []struct {
			name  string
			apply func() []change
		}{
			{"add", func() []change {
				return []change{cat.add("svc-6", "new service 6"), cat.add("svc-7", "new service 7"), cat.add("svc-8", "new service 8")}
			}},
			{"update", func() []change {
				return []change{cat.update("svc-1", "service 1, second version"), cat.update("svc-2", "service 2, second version"), cat.update("svc-6", "service 6, second version")}
			}},
			{"delete", func() []change { return []change{cat.del("svc-3"), cat.del("svc-7")} }},
			{"mixed", func() []change {
				return []change{cat.add("svc-9", "new service 9"), cat.update("svc-4", "service 4, second version"), cat.update("svc-8", "service 8, second version"), cat.del("svc-5")}
			}},
			{"mixed again", func() []change {
				return []change{cat.update("svc-1", "service 1, third version"), cat.add("svc-10", "new service 10"), cat.add("svc-11", "new service 11"), cat.update("svc-9", "service 9, second version")}
			}},
		}
		for _, r := range rounds {
			changes := r.apply()
			results := applyAndObserve(t, bs, cat0, emu, cat, changes)
			for _, res := range results {
				if !res.ok {
					continue
				}
				t.Logf("%-11s %-6s %-7s catalog-visible %6s after the provider write, Port %7s after catalog-visible",
					r.name, res.op, res.name, res.catalogLag.Round(time.Millisecond), res.latency.Round(time.Millisecond))
				if res.op == opDelete {
					deletes = append(deletes, res.latency)
				} else {
					upserts = append(upserts, res.latency)
				}
			}
			if t.Failed() {
				return
			}
		}
		waitConverged(t, emu, sc, cat, time.Minute)
	}) {
		logLatencies(t, upserts, deletes)
		return
	}
	logLatencies(t, upserts, deletes)

	t.Run("quiet minute", func(t *testing.T) {
		waitConverged(t, emu, sc, cat, time.Minute)
		// Let a few more polls pass so that nothing from the last phase is
		// still on its way.
		time.Sleep(3 * pollInterval)
		before, err := cat0.etags(context.Background())
		if err != nil {
			t.Fatalf("list the catalog before the quiet minute: %v", err)
		}
		r0 := emu.Requests()
		t.Logf("catalog unchanged for %s; watching Port writes", quietWindow)
		time.Sleep(quietWindow)
		r1 := emu.Requests()
		after, err := cat0.etags(context.Background())
		if err != nil {
			t.Fatalf("list the catalog after the quiet minute: %v", err)
		}
		if !mapsEqual(before, after) {
			t.Errorf("the catalog's etags changed during the quiet minute without any provider change:\nbefore %v\nafter  %v", before, after)
		}
		t.Logf("quiet minute: %d Port write requests, %d Port requests in all", r1.Writes-r0.Writes, r1.Total-r0.Total)
		if r1.Writes != r0.Writes {
			t.Errorf("an unchanged catalog caused %d Port write requests in %s (routes before %v, after %v)", r1.Writes-r0.Writes, quietWindow, r0.ByRoute, r1.ByRoute)
		}
	})

	t.Run("sidecar outage", func(t *testing.T) {
		waitConverged(t, emu, sc, cat, time.Minute)
		ctx := context.Background()
		logOffset := fileSize(t, bs.LogFile)
		stopped := time.Now()
		sc.stop()
		t.Logf("sidecar stopped (SIGTERM) after %s of test", time.Since(began).Round(time.Second))
		// Changes at three moments of the outage, each waited for in the
		// catalog so that it really happened while the sidecar was down.
		steps := []struct {
			at    time.Duration
			apply func() []change
		}{
			{1 * time.Second, func() []change {
				return []change{cat.add("svc-12", "added while the sidecar was down"), cat.update("svc-2", "service 2, updated while the sidecar was down"), cat.del("svc-4")}
			}},
			{10 * time.Second, func() []change {
				return []change{cat.update("svc-12", "added and updated while the sidecar was down"), cat.del("svc-6"), cat.add("svc-13", "added while the sidecar was down")}
			}},
			{20 * time.Second, func() []change {
				return []change{cat.add("svc-14", "lives only during the outage"), cat.update("svc-1", "service 1, updated while the sidecar was down")}
			}},
			{24 * time.Second, func() []change { return []change{cat.del("svc-14"), cat.del("svc-10")} }},
		}
		for _, s := range steps {
			time.Sleep(time.Until(stopped.Add(s.at)))
			changes := s.apply()
			if err := bs.SetEntities(cat.entities()...); err != nil {
				t.Fatal(err)
			}
			for _, c := range changes {
				wctx, cancel := context.WithTimeout(ctx, changeDeadline)
				_, err := cat0.waitVisible(wctx, c)
				cancel()
				if err != nil {
					t.Fatalf("the catalog did not show %s %s: %v", c.op, c.name, err)
				}
			}
		}
		time.Sleep(time.Until(stopped.Add(outage)))
		down := time.Since(stopped)
		sc.start()
		restarted := time.Now()
		t.Logf("sidecar restarted with the same state file after %s down", down.Round(time.Millisecond))
		waitConverged(t, emu, sc, cat, 2*time.Minute)
		t.Logf("after the outage, Port equals the catalog (%d entities) %s after the restart", len(cat.want()), time.Since(restarted).Round(time.Millisecond))
		if _, ok := emu.Entity("component", "component:default/svc-14"); ok {
			t.Errorf("component:default/svc-14, added and deleted during the outage, is in Port")
		}
		// The sidecar's resync on start may have caught up alone; the
		// module must still deliver what it could not send during the
		// outage (it retries with backoff up to 30 s). Its retried batch
		// was observed before the outage's later changes: Port must not go
		// back to older content meanwhile.
		writesBefore := emu.Requests().Writes
		watch := watchPort(emu, cat.want())
		n := waitAccepted(t, sc, 1, 90*time.Second)
		t.Logf("the module delivered %g changes to the restarted sidecar %s after the restart", n, time.Since(restarted).Round(time.Millisecond))
		waitConverged(t, emu, sc, cat, time.Minute)
		time.Sleep(3 * pollInterval)
		if dev := watch(); len(dev) > 0 {
			t.Errorf("Port left the catalog's content while the module caught up after the restart: %d samples differ, first: %s", len(dev), dev[0])
		}
		stale, err := sc.metric(staleSeries)
		if err != nil {
			t.Error(err)
		}
		t.Logf("after the sidecar's own catch-up: %d Port write requests, %g notifications dropped as older than what was applied", emu.Requests().Writes-writesBefore, stale)
		lines := moduleLogLines(t, bs.LogFile, logOffset)
		warnings := 0
		for _, l := range lines {
			t.Logf("backstage log: %s", l)
			if strings.Contains(l, "is not taking changes") {
				warnings++
			}
		}
		if warnings != 1 {
			t.Errorf("the module logged %d 'sidecar is not taking changes' lines during one outage, want 1", warnings)
		}
		// Backstage (and the module in it) survived the outage.
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := bs.WaitTotal(wctx, len(cat.entities())); err != nil {
			t.Errorf("Backstage after the outage: %v", err)
		}
	})
	t.Run("steered from Port", func(t *testing.T) {
		steeredFromPort(t, emu, sc, bs, cat0, cat)
	})
	t.Logf("end-to-end test took %s", time.Since(began).Round(time.Second))
}

// steeredFromPort checks what Port's UI does to the sidecar: raw examples
// arrive (at most 5 per kind, secrets masked), the resync button runs a
// resync whose state goes running → completed, a mapping edited in Port
// is applied within a poll writing only the affected entities, and a lost
// state file is rebuilt from Port without a write for the unchanged
// catalog while an entity removed meanwhile is still deleted.
func steeredFromPort(t *testing.T, emu *porttest.Emulator, sc *sidecar, bs *backstagetest.Backend, api *catalogAPI, cat *catalogEntities) {
	ctx := context.Background()
	waitConverged(t, emu, sc, cat, time.Minute)
	rec, ok := emu.Integration(integrationID)
	if !ok || rec.InstallationAppType != "portbridge" || len(rec.Config) == 0 {
		t.Fatalf("the sidecar's integration in Port: %+v", rec)
	}
	for kind, exs := range rec.Examples {
		if len(exs) == 0 || len(exs) > 5 {
			t.Errorf("raw examples of kind %s: %d", kind, len(exs))
		}
	}
	if n := len(rec.Examples["component"]); n != 5 {
		t.Errorf("%d raw component examples, want 5 (the catalog has more)", n)
	}
	for _, ex := range rec.Examples["component"] {
		if meta, _ := ex["metadata"].(map[string]any); meta["identifier"] == nil || meta["uid"] == "[REDACTED]" {
			t.Errorf("raw example metadata %v", meta)
		}
	}

	// The resync button.
	n := len(rec.ResyncStateHistory)
	if _, err := emu.RequestResync(integrationID); err != nil {
		t.Fatal(err)
	}
	hist := waitStates(t, emu, n, 2*portPollInterval+30*time.Second)
	t.Logf("resync button: states %v → %v", hist[n]["status"], hist[len(hist)-1]["status"])

	// A mapping edit: one property's jq of the components.
	components := len(cat.descriptions)
	rec, _ = emu.Integration(integrationID)
	cfg := rec.Config
	for _, res := range cfg["resources"].([]any) {
		if m := res.(map[string]any); m["kind"] == "component" {
			m["port"].(map[string]any)["entity"].(map[string]any)["mappings"].(map[string]any)["properties"].(map[string]any)["description"] = `.metadata.description + " [port]"`
		}
	}
	bulk := emu.Requests().ByRoute["POST /v1/blueprints/{b}/entities/bulk"]
	n = len(rec.ResyncStateHistory)
	edited := time.Now()
	if _, err := emu.EditIntegrationConfig(integrationID, cfg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(portPollInterval + 30*time.Second)
	for {
		done := 0
		for name := range cat.descriptions {
			if r, ok := emu.Entity("component", "component:default/"+name); ok && strings.HasSuffix(fmt.Sprint(r.Entity.Properties["description"]), " [port]") {
				done++
			}
		}
		if done == components {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mapping edited in Port reached %d of %d components", done, components)
		}
		time.Sleep(portPoll)
	}
	took := time.Since(edited)
	waitStates(t, emu, n, 30*time.Second)
	if got, want := emu.Requests().ByRoute["POST /v1/blueprints/{b}/entities/bulk"]-bulk, (components+19)/20; got != want {
		t.Errorf("the mapping edit took %d bulk upserts, want %d (only the %d components changed)", got, want, components)
	}
	if g, ok := emu.Entity("group", "group:default/team-a"); !ok || g.Entity.Properties["description"] != "the owners" {
		t.Errorf("the group changed with a components-only mapping edit: %v", g.Entity.Properties)
	}
	t.Logf("mapping edited in Port: %d components rewritten %s after the edit (poll interval %s), no restart", components, took.Round(time.Millisecond), portPollInterval)

	// The state file lost, one component removed meanwhile.
	sc.stop()
	if err := os.Remove(filepath.Join(sc.dir, "state.db")); err != nil {
		t.Fatal(err)
	}
	gone := cat.del("svc-8")
	if err := bs.SetEntities(cat.entities()...); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, changeDeadline)
	_, err := api.waitVisible(wctx, gone)
	cancel()
	if err != nil {
		t.Fatalf("the catalog did not drop %s: %v", gone.name, err)
	}
	writes := emu.Requests().EntityWrites
	sc.start()
	deadline = time.Now().Add(90 * time.Second)
	for {
		if _, ok := emu.Entity("component", gone.portID()); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s, removed while the state file was lost, is still in Port", gone.portID())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var st *portbridgev1.GetStatusResponse
	deadline = time.Now().Add(60 * time.Second)
	for {
		st, err = sc.status()
		if err == nil && st.GetLastResync().GetFinishedAt() != nil && st.GetQueue().GetDepth() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no resync after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(3 * pollInterval)
	if o := st.GetOwnership(); o.GetState() != "rebuilt" || o.GetAdopted() == 0 {
		t.Errorf("ownership after losing the state file: %v", o)
	}
	if w := emu.Requests().EntityWrites - writes; w != 1 {
		t.Errorf("%d entity writes after the state file was lost, want 1 (the delete of %s)", w, gone.portID())
	}
	t.Logf("state file lost: ownership %s (%s); %d entity write", st.GetOwnership().GetState(), st.GetOwnership().GetDetail(), emu.Requests().EntityWrites-writes)
}

// waitStates waits until the integration's resync-state history grew past
// n and ends with completed, and returns it.
func waitStates(t *testing.T, emu *porttest.Emulator, n int, timeout time.Duration) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rec, _ := emu.Integration(integrationID)
		h := rec.ResyncStateHistory
		if len(h) >= n+2 && h[len(h)-1]["status"] == "completed" {
			for _, s := range h[n:] {
				if s["status"] == "running" {
					return h
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no running → completed resync state after %d states: %v", n, h)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logLatencies prints the latency summary lines the issue asks for.
func logLatencies(t *testing.T, upserts, deletes []time.Duration) {
	t.Helper()
	if len(upserts) > 0 {
		p50, mx := p50max(upserts)
		t.Logf("E2E latency catalog→Port (adds and updates): n=%d, p50=%s, max=%s (target max ≤ poll interval + 1 s = %s)",
			len(upserts), p50.Round(time.Millisecond), mx.Round(time.Millisecond), pollInterval+time.Second)
	}
	if len(deletes) > 0 {
		p50, mx := p50max(deletes)
		t.Logf("E2E latency catalog→Port (deletes, including the %s grace period): n=%d, p50=%s, max=%s",
			deleteGrace, len(deletes), p50.Round(time.Millisecond), mx.Round(time.Millisecond))
	}
}

func p50max(ds []time.Duration) (time.Duration, time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2], s[len(s)-1]
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// ---- changes and their observation ----

type op string

const (
	opAdd    op = "add"
	opUpdate op = "update"
	opDelete op = "delete"
)

// change is one entity change the test makes in the catalog.
type change struct {
	op          op
	name        string // component name
	description string // the new description (add, update)
}

func (c *catalogEntities) add(name, d string) change {
	c.set(name, d)
	return change{op: opAdd, name: name, description: d}
}

func (c *catalogEntities) update(name, d string) change {
	c.set(name, d)
	return change{op: opUpdate, name: name, description: d}
}

func (c *catalogEntities) del(name string) change {
	c.remove(name)
	return change{op: opDelete, name: name}
}

func (c change) portID() string { return "component:default/" + c.name }

// inPort reports whether the emulator shows the change, and when Port
// wrote it (the record's update time; for a delete, when the test saw it
// gone).
func (c change) inPort(emu *porttest.Emulator) (time.Time, bool) {
	rec, ok := emu.Entity("component", c.portID())
	if c.op == opDelete {
		return time.Now(), !ok
	}
	if !ok {
		return time.Time{}, false
	}
	if d, _ := rec.Entity.Properties["description"].(string); d != c.description {
		return time.Time{}, false
	}
	return rec.UpdatedAt, true
}

type observed struct {
	change
	ok         bool
	catalogLag time.Duration // provider write -> visible in the catalog API
	latency    time.Duration // visible in the catalog API -> in Port
}

// applyAndObserve writes the catalog content to the provider and waits for
// every change to be visible in the catalog API and in Port, recording when
// each side showed it.
func applyAndObserve(t *testing.T, bs *backstagetest.Backend, api *catalogAPI, emu *porttest.Emulator, cat *catalogEntities, changes []change) []observed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), changeDeadline+deleteGrace)
	defer cancel()

	portAt := make(chan map[string]time.Time, 1)
	go func() {
		seen := map[string]time.Time{}
		tick := time.NewTicker(portPoll)
		defer tick.Stop()
		for len(seen) < len(changes) {
			for _, c := range changes {
				if _, done := seen[c.name]; done {
					continue
				}
				if at, ok := c.inPort(emu); ok {
					seen[c.name] = at
				}
			}
			select {
			case <-ctx.Done():
				portAt <- seen
				return
			case <-tick.C:
			}
		}
		portAt <- seen
	}()

	written := time.Now()
	if err := bs.SetEntities(cat.entities()...); err != nil {
		t.Fatal(err)
	}
	catalogAt := map[string]time.Time{}
	for len(catalogAt) < len(changes) && ctx.Err() == nil {
		for _, c := range changes {
			if _, done := catalogAt[c.name]; done {
				continue
			}
			ok, err := api.shows(ctx, c)
			if err != nil && ctx.Err() == nil {
				t.Logf("catalog API: %v", err)
			}
			if ok {
				catalogAt[c.name] = time.Now()
			}
		}
		time.Sleep(catalogPoll)
	}
	inPort := <-portAt

	var out []observed
	for _, c := range changes {
		o := observed{change: c}
		ca, cok := catalogAt[c.name]
		pa, pok := inPort[c.name]
		switch {
		case !cok:
			t.Errorf("%s %s: not visible in the catalog API within %s", c.op, c.name, changeDeadline)
		case !pok:
			rec, found := emu.Entity("component", c.portID())
			t.Errorf("%s %s: visible in the catalog API but not in Port within %s (Port has it: %v, record: %+v)", c.op, c.name, changeDeadline, found, rec.Entity)
		default:
			o.ok = true
			o.catalogLag = ca.Sub(written)
			o.latency = pa.Sub(ca)
		}
		out = append(out, o)
	}
	return out
}

// waitConverged waits until Port's compared blueprints equal the catalog
// content and the sidecar has nothing queued, retrying or pending.
func waitConverged(t *testing.T, emu *porttest.Emulator, sc *sidecar, cat *catalogEntities, timeout time.Duration) {
	t.Helper()
	want := cat.want()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		got := portState(emu)
		if mapsEqual(got, want) {
			st, err := sc.status()
			switch {
			case err != nil:
				last = "sidecar status: " + err.Error()
			case st.GetQueue().GetDepth() != 0 || st.GetQueue().GetPendingDeletions() != 0 || st.GetQueue().GetRetrying() != 0:
				last = fmt.Sprintf("Port equals the catalog but the sidecar queue is %v", st.GetQueue())
			default:
				return
			}
		} else {
			last = fmt.Sprintf("Port differs from the catalog:\nwant %v\ngot  %v", want, got)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Port did not converge with the catalog within %s: %s", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watchPort samples Port's compared blueprints every portPoll until the
// returned function is called, which returns the samples that differed
// from want.
func watchPort(emu *porttest.Emulator, want map[string]string) func() []string {
	stop := make(chan struct{})
	done := make(chan []string)
	go func() {
		var dev []string
		tick := time.NewTicker(portPoll)
		defer tick.Stop()
		for {
			if got := portState(emu); !mapsEqual(got, want) {
				dev = append(dev, fmt.Sprintf("at %s: %v", time.Now().Format("15:04:05.000"), got))
			}
			select {
			case <-stop:
				done <- dev
				return
			case <-tick.C:
			}
		}
	}()
	return func() []string {
		close(stop)
		return <-done
	}
}

// waitAccepted waits until the running sidecar has accepted at least want
// changes through its API, and returns the count.
func waitAccepted(t *testing.T, sc *sidecar, want int, timeout time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, err := sc.metric(acceptedSeries)
		if err == nil && n >= float64(want) {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("the module sent %g changes to the sidecar within %s, want at least %d (last error: %v)", n, timeout, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---- the catalog API ----

// catalogAPI reads the real Backstage's catalog with the static token.
type catalogAPI struct {
	url, token string
}

func (a *catalogAPI) get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return 0, nil, fmt.Errorf("GET %s: read body: %w", path, err)
	}
	return resp.StatusCode, buf.Bytes(), nil
}

// shows reports whether the catalog API shows the change: the component
// with the new description, or a 404 for a delete.
func (a *catalogAPI) shows(ctx context.Context, c change) (bool, error) {
	status, body, err := a.get(ctx, "/api/catalog/entities/by-name/component/default/"+url.PathEscape(c.name))
	if err != nil {
		return false, err
	}
	switch {
	case status == http.StatusNotFound:
		return c.op == opDelete, nil
	case status != http.StatusOK:
		return false, fmt.Errorf("by-name %s: HTTP %d %s", c.name, status, strings.TrimSpace(string(body)))
	case c.op == opDelete:
		return false, nil
	}
	var e struct {
		Metadata struct {
			Description string `json:"description"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return false, fmt.Errorf("by-name %s: decode: %w", c.name, err)
	}
	return e.Metadata.Description == c.description, nil
}

// waitVisible polls until the catalog API shows the change.
func (a *catalogAPI) waitVisible(ctx context.Context, c change) (time.Time, error) {
	for {
		ok, err := a.shows(ctx, c)
		if ok {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, errors.Join(ctx.Err(), err)
		case <-time.After(catalogPoll):
		}
	}
}

// etags lists every entity's ref and etag.
func (a *catalogAPI) etags(ctx context.Context) (map[string]string, error) {
	status, body, err := a.get(ctx, "/api/catalog/entities/by-query?limit=1000&fields=kind,metadata.namespace,metadata.name,metadata.etag")
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("by-query: HTTP %d %s", status, strings.TrimSpace(string(body)))
	}
	var page struct {
		Items []struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Namespace string `json:"namespace"`
				Name      string `json:"name"`
				Etag      string `json:"etag"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, fmt.Errorf("by-query: decode: %w", err)
	}
	out := map[string]string{}
	for _, it := range page.Items {
		out[strings.ToLower(it.Kind)+":"+it.Metadata.Namespace+"/"+it.Metadata.Name] = it.Metadata.Etag
	}
	return out, nil
}

// ---- the sidecar child process ----

// sidecar is `portbridge serve` as a child process, restartable on the same
// address with the same state file.
type sidecar struct {
	t      *testing.T
	bin    string
	addr   string
	dir    string
	config string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
}

func (s *sidecar) writeConfig(bs *backstagetest.Backend, portURL string) {
	s.config = filepath.Join(s.dir, "portbridge.yaml")
	s.log = filepath.Join(s.dir, "portbridge.log")
	writeFile(s.t, s.config, fmt.Sprintf(`server:
  listen: %s
  token: %s
state:
  path: %s
backstage:
  baseUrl: %s
  token: %s
port:
  baseUrl: %s
  clientId: %s
  clientSecret: %s
  integration:
    pollInterval: %s
mapping:
  source: port
sync:
  resyncOnStart: true
  deleteGracePeriod: %s
log:
  level: info
`, s.addr, sidecarToken, filepath.Join(s.dir, "state.db"), bs.URL, bs.Token, portURL,
		porttest.DefaultClientID, porttest.DefaultClientSecret, portPollInterval, deleteGrace))
	s.t.Cleanup(func() {
		s.stop()
		if s.t.Failed() {
			b, _ := os.ReadFile(s.log)
			s.t.Logf("sidecar log (tail):\n%s", tail(b, 6000))
		}
	})
}

// start starts the sidecar and waits for /healthz.
func (s *sidecar) start() {
	t := s.t
	t.Helper()
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.bin, "serve", "--config", s.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start the sidecar: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + s.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(s.log)
			t.Fatalf("the sidecar exited during start:\n%s", tail(b, 4000))
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(s.log)
			t.Fatalf("the sidecar did not become healthy within 30 s (last: %v):\n%s", err, tail(b, 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the exit (SIGKILL after 10 s).
func (s *sidecar) stop() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.t.Errorf("the sidecar did not stop within 10 s of SIGTERM; killing it")
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// status asks the running sidecar for its status.
func (s *sidecar) status() (*portbridgev1.GetStatusResponse, error) {
	cl, err := client.New("http://"+s.addr, sidecarToken, client.WithRetry(0, 0))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.GetStatus(ctx)
}

// Series of the sidecar's /metrics the test reads.
const (
	// acceptedSeries counts the changes the sidecar took through its API.
	acceptedSeries = `portbridge_api_changes_total{result="accepted"}`
	// staleSeries counts notifications dropped as older than what was applied.
	staleSeries = `portbridge_changes_stale_total`
)

// metric reads one series (name and labels as exposed) from the sidecar's
// /metrics; an absent series reads 0.
func (s *sidecar) metric(series string) (float64, error) {
	resp, err := http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("read the sidecar's metrics: %w", err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return 0, fmt.Errorf("read the sidecar's metrics: %w", err)
	}
	for line := range strings.Lines(buf.String()) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var n float64
			if _, err := fmt.Sscan(strings.TrimSpace(v), &n); err != nil {
				return 0, fmt.Errorf("metrics line %q: %w", line, err)
			}
			return n, nil
		}
	}
	return 0, nil
}

// ---- preparation ----

// buildSidecar builds the sidecar binary into a temporary directory.
func buildSidecar(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "portbridge")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/portbridge/portbridge/sidecar")
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the sidecar: %v\n%s", err, out)
	}
	return bin
}

// buildModule prepares the Backstage module in dir (client/backstage) under
// a file lock shared with other test processes: `npm ci` when node_modules
// is missing or older than package-lock.json, `npm run build` when a
// compiled file in dist/ is missing or older than its source, package.json,
// package-lock.json or tsconfig.json. It returns dir.
func buildModule(t *testing.T, dir string) string {
	t.Helper()
	lockPath := filepath.Join(os.TempDir(), "portbridge-client-backstage-npm.lock")
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("open the npm lock %s: %v", lockPath, err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("take the npm lock %s: %v", lockPath, err)
	}
	defer func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }()

	install, build, err := moduleStale(dir)
	if err != nil {
		t.Fatalf("check the module build in %s: %v", dir, err)
	}
	var steps [][]string
	if install != "" {
		steps = append(steps, []string{"ci", "--no-audit", "--no-fund"})
		t.Logf("installing the Backstage module's dependencies in %s: %s", dir, install)
	}
	if install != "" || build != "" {
		steps = append(steps, []string{"run", "build"})
		t.Logf("building the Backstage module in %s: %s", dir, build)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, args := range steps {
		cmd := exec.CommandContext(ctx, "npm", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "npm_config_nodedir=/usr")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm %s in %s: %v\n%s", strings.Join(args, " "), dir, err, tail(out, 4000))
		}
	}
	if install != "" || build != "" {
		if install, build, err := moduleStale(dir); err != nil || install != "" || build != "" {
			t.Fatalf("the module in %s is still not built after npm: %v %s %s", dir, err, install, build)
		}
	}
	return dir
}

// moduleStale says why the module needs `npm ci` (install) and why it needs
// `npm run build` (build); empty strings mean it does not.
func moduleStale(dir string) (install, build string, err error) {
	mtime := func(rel string) (time.Time, bool, error) {
		fi, err := os.Stat(filepath.Join(dir, rel))
		if errors.Is(err, fs.ErrNotExist) {
			return time.Time{}, false, nil
		}
		if err != nil {
			return time.Time{}, false, err
		}
		return fi.ModTime(), true, nil
	}
	lock, ok, err := mtime("package-lock.json")
	if err != nil || !ok {
		return "", "", fmt.Errorf("package-lock.json in %s: %w", dir, errors.Join(err, fs.ErrNotExist))
	}
	// npm ci writes node_modules/.package-lock.json last.
	switch installed, ok, err := mtime("node_modules/.package-lock.json"); {
	case err != nil:
		return "", "", err
	case !ok:
		install = "node_modules is missing"
	case installed.Before(lock):
		install = "package-lock.json is newer than node_modules"
	}
	inputs := lock
	for _, f := range []string{"package.json", "tsconfig.json"} {
		at, ok, err := mtime(f)
		if err != nil || !ok {
			return "", "", fmt.Errorf("%s in %s: %w", f, dir, errors.Join(err, fs.ErrNotExist))
		}
		if at.After(inputs) {
			inputs = at
		}
	}
	sources, err := filepath.Glob(filepath.Join(dir, "src", "*.ts"))
	if err != nil || len(sources) == 0 {
		return "", "", fmt.Errorf("no sources in %s/src: %w", dir, errors.Join(err, fs.ErrNotExist))
	}
	for _, src := range sources {
		if strings.HasSuffix(src, ".d.ts") {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(src), ".ts")
		srcAt, _, err := mtime(filepath.Join("src", name+".ts"))
		if err != nil {
			return "", "", err
		}
		out := filepath.Join("dist", name+".js")
		outAt, ok, err := mtime(out)
		switch {
		case err != nil:
			return "", "", err
		case !ok:
			return install, out + " is missing", nil
		case outAt.Before(srcAt) || outAt.Before(inputs):
			return install, out + " is older than its source or the package files", nil
		}
	}
	return install, "", nil
}

// ---- small helpers ----

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fi.Size()
}

// ansiEscape matches the colour codes of Backstage's console log.
var ansiEscape = regexp.MustCompile("\x1b\\[[0-9;]*m")

// moduleLogLines returns the lines of the Backstage log from offset on that
// come from the port-bridge module.
func moduleLogLines(t *testing.T, path string, offset int64) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read the Backstage log: %v", err)
	}
	var out []string
	for line := range strings.Lines(string(b[min(offset, int64(len(b))):])) {
		if strings.Contains(line, "port-bridge:") {
			out = append(out, strings.TrimSpace(ansiEscape.ReplaceAllString(line, "")))
		}
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
