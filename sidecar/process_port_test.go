package main

// Process-level tests of steering from Port: the real binary against the
// catalog and Port emulators — a mapping edited in Port, `portbridge
// resync --wait` beside the daemon, a CronJob-style `sync --once` beside
// it, and a lost state file rebuilt from Port.

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

// steerRig is a catalog and a Port emulator for one process test.
type steerRig struct {
	t   *testing.T
	cat *catalogtest.Emulator
	emu *porttest.Emulator
	env childEnv
	bin string
}

func newSteerRig(t *testing.T, n int, extraEnv ...string) *steerRig {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	cat := catalogtest.New(catalogtest.Options{Token: "catalog-token-123", Seed: 9})
	if err := cat.UpsertAll(catalogtest.Generate(n, 9)); err != nil {
		t.Fatal(err)
	}
	catSrv := httptest.NewServer(cat)
	t.Cleanup(catSrv.Close)
	emu := porttest.New(porttest.Options{})
	portSrv := httptest.NewServer(emu)
	t.Cleanup(portSrv.Close)
	return &steerRig{t: t, cat: cat, emu: emu, bin: bin, env: childEnv{catalogURL: catSrv.URL, portURL: portSrv.URL,
		statePath: filepath.Join(t.TempDir(), "state.db"), resyncOnStart: true, env: extraEnv}}
}

// startSteered is the common start of these tests: a rig with n catalog
// entities and the daemon after its first resync.
func startSteered(t *testing.T, n int, extraEnv ...string) (*steerRig, *child) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	r := newSteerRig(t, n, extraEnv...)
	start := time.Now()
	c := startChild(t, r.env)
	waitResync(t, c, start)
	return r, c
}

// waitResync waits for a resync that started after since to finish, and
// returns it.
func waitResync(t *testing.T, c *child, since time.Time) *portbridgev1.ResyncStatus {
	t.Helper()
	cl := c.client()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := cl.GetStatus(context.Background())
		if err == nil {
			if r := st.GetLastResync(); r != nil && r.GetFinishedAt() != nil && r.GetStartedAt().AsTime().After(since) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no resync finished since %s (%v)", since, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// run runs the binary to its end (killed after 3 minutes, so a hang
// fails the test instead of stalling it).
func (r *steerRig) run(args ...string) (string, int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, args...)
	out, _ := cmd.CombinedOutput()
	if ctx.Err() != nil {
		r.t.Fatalf("portbridge %v did not finish within 3 minutes:\n%s", args, out)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// stopChild ends a child with SIGTERM (a graceful stop).
func stopChild(t *testing.T, c *child) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
}

// A mapping edited in Port reaches the running binary within a poll: only
// the entities whose output changed are written, no restart.
func TestProcessMappingEditedInPort(t *testing.T) {
	r, c := startSteered(t, 60, "PORTBRIDGE_MAPPING_SOURCE=port", "PORTBRIDGE_PORT_INTEGRATION_POLL_INTERVAL=1s")
	rec, ok := r.emu.Integration("portbridge")
	if !ok || rec.InstallationAppType != "portbridge" || len(rec.Config) == 0 {
		t.Fatalf("integration %+v", rec)
	}
	components := 0
	for _, ref := range r.cat.Refs() {
		if strings.HasPrefix(ref, "component:") {
			components++
		}
	}
	cfg := rec.Config
	for _, res := range cfg["resources"].([]any) {
		if m := res.(map[string]any); m["kind"] == "component" {
			m["port"].(map[string]any)["entity"].(map[string]any)["mappings"].(map[string]any)["properties"].(map[string]any)["description"] = `.metadata.description + " (from Port)"`
		}
	}
	writes := r.emu.Requests().EntityWrites
	edited := time.Now()
	if _, err := r.emu.EditIntegrationConfig("portbridge", cfg); err != nil {
		t.Fatal(err)
	}
	rep := waitResync(t, c, edited)
	took := time.Since(edited)
	if rep.GetTotals().GetPushed() != uint64(components) || rep.GetPerKind()["component"].GetPushed() != uint64(components) {
		t.Fatalf("the mapping's resync pushed %d (components %d): %v", rep.GetTotals().GetPushed(), components, rep.GetPerKind())
	}
	if w, want := r.emu.Requests().EntityWrites-writes, (components+19)/20; w != want {
		t.Fatalf("%d entity writes for %d changed components, want %d", w, components, want)
	}
	t.Logf("mapping edited in Port: %d components rewritten in %d bulk requests, %s after the edit (poll interval 1s)", components, (components+19)/20, took.Round(time.Millisecond))
	hist := r.record("portbridge").ResyncStateHistory
	if n := len(hist); n < 4 || hist[n-2]["status"] != "running" || hist[n-1]["status"] != "completed" {
		t.Fatalf("resync states %v", hist)
	}
}

func (r *steerRig) record(id string) porttest.IntegrationRecord {
	r.t.Helper()
	rec, ok := r.emu.Integration(id)
	if !ok {
		r.t.Fatalf("integration %s not in Port", id)
	}
	return rec
}

// `portbridge resync --wait` asks the running daemon and exits as `sync
// --once` does.
func TestProcessResyncWait(t *testing.T) {
	r, c := startSteered(t, 40)
	conn := []string{"--addr", c.url, "--token", c.token, "--timeout", "2m"}

	out, code := r.run(append([]string{"resync", "--wait"}, conn...)...)
	if code != 0 || !strings.Contains(out, "succeeded") || !strings.Contains(out, "unchanged 40") {
		t.Fatalf("resync --wait: exit %d\n%s", code, out)
	}
	out, code = r.run(append([]string{"resync", "--wait", "--verify", "--reason", "test"}, conn...)...)
	if code != 0 || !strings.Contains(out, "verify verify-") {
		t.Fatalf("resync --wait --verify: exit %d\n%s", code, out)
	}
	if out, code = r.run(append([]string{"resync"}, conn...)...); code != 0 || !strings.Contains(out, "requested") {
		t.Fatalf("resync without --wait: exit %d\n%s", code, out)
	}
	// A failing catalog fails the resync: exit 1, as sync --once.
	time.Sleep(200 * time.Millisecond) // let the previous request's resync run
	waitIdle(t, c)
	r.cat.SetUnavailable(503)
	out, code = r.run(append([]string{"resync", "--wait"}, conn...)...)
	r.cat.SetUnavailable(0)
	if code != 1 || !strings.Contains(out, "failed") {
		t.Fatalf("resync --wait over a failing catalog: exit %d\n%s", code, out)
	}
	// Deletions the guard refuses: exit 4.
	for _, ref := range r.cat.Refs()[:39] {
		if err := r.cat.Delete(ref); err != nil {
			t.Fatal(err)
		}
	}
	out, code = r.run(append([]string{"resync", "--wait"}, conn...)...)
	if code != 4 || !strings.Contains(out, "deletions not applied") {
		t.Fatalf("resync --wait with the guard refusing: exit %d\n%s", code, out)
	}
	if out, code = r.run("resync", "--wait", "--addr", c.url, "--token", "wrong-token-123"); code != 1 || !strings.Contains(out, "--token") {
		t.Fatalf("wrong token: exit %d\n%s", code, out)
	}
}

// waitIdle waits until the daemon runs no resync.
func waitIdle(t *testing.T, c *child) {
	t.Helper()
	cl := c.client()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := cl.GetStatus(context.Background())
		if err == nil && st.GetCurrentResync() == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon never became idle")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A CronJob-style `sync --once` beside the running daemon cannot use the
// daemon's (locked) state file: it takes ownership from Port, makes no
// write for an unchanged catalog, deletes what the catalog lost, and
// never touches another data source's entities.
func TestProcessSyncOnceBesideTheDaemon(t *testing.T) {
	r, c := startSteered(t, 50)
	if _, err := r.emu.PutEntity("component", port.Entity{Identifier: "foreign", Title: "Not ours"}, "someone-else", false); err != nil {
		t.Fatal(err)
	}
	// The same config as the daemon's: its state.path is locked.
	cfg := c.config
	writes := r.emu.Requests().EntityWrites
	out, code := r.run("sync", "--once", "--config", cfg)
	if code != 0 || !strings.Contains(out, "temporary state file") || !strings.Contains(out, "pushed 0") {
		t.Fatalf("sync --once beside the daemon: exit %d\n%s", code, out)
	}
	if w := r.emu.Requests().EntityWrites - writes; w != 0 {
		t.Fatalf("sync --once on an unchanged catalog made %d entity writes", w)
	}
	// An entity removed from the catalog (the daemon was not told).
	removed := ""
	for _, ref := range r.cat.Refs() {
		if strings.HasPrefix(ref, "component:") {
			removed = ref
			break
		}
	}
	if err := r.cat.Delete(removed); err != nil {
		t.Fatal(err)
	}
	writes = r.emu.Requests().EntityWrites
	out, code = r.run("sync", "--once", "--ephemeral-state", "--config", cfg)
	if code != 0 || !strings.Contains(out, "deleted 1") || !strings.Contains(out, "pushed 0") {
		t.Fatalf("sync --once --ephemeral-state: exit %d\n%s", code, out)
	}
	if w := r.emu.Requests().EntityWrites - writes; w != 1 {
		t.Fatalf("%d entity writes, want 1 (the delete)", w)
	}
	if _, ok := r.emu.Entity("component", removed); ok {
		t.Fatal("the entity removed from the catalog is still in Port")
	}
	if _, ok := r.emu.Entity("component", "foreign"); !ok {
		t.Fatal("another data source's entity was deleted")
	}
	// The one-shot runs reported their resync state to Port.
	if hist := r.record("portbridge").ResyncStateHistory; len(hist) < 6 || hist[len(hist)-1]["status"] != "completed" {
		t.Fatalf("resync states %v", hist)
	}
}

// Deleting the state file and restarting rebuilds ownership from Port:
// no write for the unchanged entities, and the one removed meanwhile is
// still deleted.
func TestProcessLostStateFileRebuiltFromPort(t *testing.T) {
	r, c := startSteered(t, 50)
	stopChild(t, c)
	if err := os.Remove(r.env.statePath); err != nil {
		t.Fatal(err)
	}
	removed := r.cat.Refs()[7]
	if err := r.cat.Delete(removed); err != nil {
		t.Fatal(err)
	}
	writes := r.emu.Requests().EntityWrites
	restarted := time.Now()
	c2 := startChild(t, r.env)
	rep := waitResync(t, c2, restarted)
	if rep.GetTotals().GetPushed() != 0 || rep.GetTotals().GetDeleted() != 1 || rep.GetState() != "succeeded" {
		t.Fatalf("first resync after losing the state file: %v (%s)", rep.GetTotals(), rep.GetDeletionsSkippedReason())
	}
	if w := r.emu.Requests().EntityWrites - writes; w != 1 {
		t.Fatalf("%d entity writes, want 1 (the delete)", w)
	}
	st, err := c2.client().GetStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if o := st.GetOwnership(); o.GetState() != "rebuilt" || o.GetOrphans() != 1 || o.GetAdopted() == 0 {
		t.Fatalf("ownership %v", o)
	}
	kind, _, _ := strings.Cut(removed, ":")
	if _, ok := r.emu.Entity(kind, removed); ok {
		t.Fatalf("%s removed from the catalog is still in Port", removed)
	}
}
