package main

// Process-level tests of the safety promises: the real binary's exit codes,
// the dry run's plan, failures visible in `portbridge status`, and a state
// file that is damaged or disappears.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
	"github.com/portbridge/portbridge/sidecar/state"
)

var parkedOne = regexp.MustCompile(`Parked entities\s+1\n`)

var exampleFiles = []string{"../testdata/backstage-examples/all.yaml", "../testdata/backstage-examples/acme-corp.yaml"}

// oneShot is a catalog emulator with the example catalog, a Port emulator
// and a config for `portbridge sync --once` against them.
type oneShot struct {
	t       *testing.T
	cat     *catalogtest.Emulator
	portEmu *porttest.Emulator
	dir     string
	config  string
}

func newOneShot(t *testing.T, extra string) *oneShot {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	o := &oneShot{t: t, dir: t.TempDir()}
	var catURL, portURL string
	o.cat, catURL, o.portEmu, portURL = emulators(t, 5, 0)
	if err := o.cat.LoadFiles(exampleFiles...); err != nil {
		t.Fatal(err)
	}
	o.config = filepath.Join(o.dir, "portbridge.yaml")
	cfg := fmt.Sprintf("server:\n  token: unused-token\nstate:\n  path: %s\nbackstage:\n  baseUrl: %s\n  token: catalog-token-123\nport:\n  baseUrl: %s\n  clientId: %s\n  clientSecret: %s\nlog:\n  level: warn\n%s",
		filepath.Join(o.dir, "state.db"), catURL, portURL, porttest.DefaultClientID, porttest.DefaultClientSecret, extra)
	if err := os.WriteFile(o.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return o
}

// run runs the binary with args and returns stdout, stderr and the exit code.
func (o *oneShot) run(args ...string) (string, string, int) {
	o.t.Helper()
	bin, err := buildOnce()
	if err != nil {
		o.t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

func (o *oneShot) sync(args ...string) (string, string, int) {
	return o.run(append([]string{"sync", "--once", "--config", o.config}, args...)...)
}

// `sync --once` exits 4 when the guard refuses deletions, with the reason.
func TestSyncOnceExitsNonZeroWhenDeletionsAreRefused(t *testing.T) {
	t.Parallel()
	o := newOneShot(t, "")
	if out, errOut, code := o.sync(); code != 0 {
		t.Fatalf("first sync: exit %d\n%s\n%s", code, out, errOut)
	}
	refs := o.cat.Refs()
	if err := o.cat.Delete(refs[:len(refs)*95/100]...); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := o.sync()
	if code != 4 || !strings.Contains(out, "entityDeletionThreshold") || !strings.Contains(errOut, "deletions refused by the guard") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

// `sync --once --dry-run` on the example catalog after editing one entity
// prints that entity's changed field with old and new values; a fresh
// Port lists the blueprints a real run would create.
func TestDryRunPrintsChangedFields(t *testing.T) {
	t.Parallel()
	o := newOneShot(t, "")
	out, _, code := o.sync("--dry-run")
	if code != 0 || !strings.Contains(out, "blueprint component: would be created") || o.portEmu.Requests().Writes != 0 {
		t.Fatalf("dry run on an empty Port: exit %d, %d writes\n%s", code, o.portEmu.Requests().Writes, out)
	}
	if out, errOut, code := o.sync(); code != 0 {
		t.Fatalf("sync: exit %d\n%s\n%s", code, out, errOut)
	}
	const ref = "component:default/artist-lookup"
	ent, ok := o.cat.Get(ref)
	if !ok {
		t.Fatal("no " + ref)
	}
	old := ent["metadata"].(map[string]any)["description"]
	ent["metadata"].(map[string]any)["description"] = "Artist Lookup, edited for the dry run"
	if err := o.cat.Upsert(ent); err != nil {
		t.Fatal(err)
	}
	writes := o.portEmu.Requests().Writes
	out, errOut, code := o.sync("--dry-run")
	if code != 0 || o.portEmu.Requests().Writes != writes {
		t.Fatalf("dry run: exit %d, %d writes\n%s\n%s", code, o.portEmu.Requests().Writes-writes, out, errOut)
	}
	want := fmt.Sprintf("  properties.description: %q → %q", old, "Artist Lookup, edited for the dry run")
	if !regexp.MustCompile(`update\s+component\s+`+ref).MatchString(out) || !strings.Contains(out, want) || !strings.Contains(out, "Plan: 0 to create, 1 to update, 0 to delete") {
		t.Fatalf("dry run output lacks the update and %s:\n%s", want, out)
	}
	out, _, code = o.sync("--dry-run", "--output", "json")
	var doc struct {
		Update []struct {
			Ref    string `json:"entityRef"`
			Fields []struct {
				Path     string
				Old, New any
			} `json:"fields"`
		} `json:"update"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != 0 {
		t.Fatalf("json plan: exit %d %v\n%s", code, err, out)
	}
	if len(doc.Update) != 1 || doc.Update[0].Ref != ref || len(doc.Update[0].Fields) != 1 || doc.Update[0].Fields[0].Path != "properties.description" ||
		doc.Update[0].Fields[0].Old != old {
		t.Fatalf("json plan %+v", doc)
	}
}

// A permanent 422 is parked, and `portbridge status` shows it with Port's
// message.
func TestPermanentFailureVisibleInStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	_, catURL, portEmu, portURL := emulators(t, 6, 0)
	c := startChild(t, childEnv{catalogURL: catURL, portURL: portURL, statePath: filepath.Join(t.TempDir(), "state.db"), resyncOnStart: true})
	// Port refuses lifecycles outside an enum once the blueprint has one.
	var bpReady bool
	for range 200 {
		if bp, ok := portEmu.Blueprint("component"); ok {
			p := bp.Schema.Properties["lifecycle"]
			p.Enum = []any{"production", "experimental"}
			bp.Schema.Properties["lifecycle"] = p
			if err := portEmu.PutBlueprint(bp); err != nil {
				t.Fatal(err)
			}
			bpReady = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !bpReady {
		t.Fatal("the sidecar did not create the component blueprint")
	}
	bad := component("retired-service", "retired")
	bad["spec"].(map[string]any)["lifecycle"] = "retired"
	ctx := context.Background()
	if _, err := c.client().PublishChanges(ctx, &portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{change(t, bad)}}); err != nil {
		t.Fatal(err)
	}
	bin, _ := buildOnce()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command(bin, "status", "--addr", c.url, "--token", c.token).CombinedOutput()
		if err == nil && parkedOne.Match(out) {
			if !strings.Contains(string(out), "component:default/retired-service") || !strings.Contains(string(out), "422") || !strings.Contains(string(out), "lifecycle") {
				t.Fatalf("status lacks the parked entity or Port's message:\n%s", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the parked entity (%v):\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A state file that cannot be a whole bbolt file stops the start with an
// error naming it; one deleted under a running daemon stops
// acknowledgements within seconds and ends the process non-zero; a second
// daemon on the same file is refused with a clear message.
func TestBrokenStateFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	_, catURL, _, portURL := emulators(t, 7, 50)
	dir := t.TempDir()

	t.Run("truncated", func(t *testing.T) {
		path := filepath.Join(dir, "truncated.db")
		s, err := state.Open(path, state.Options{})
		if err != nil {
			t.Fatal(err)
		}
		w := state.Write{Observed: map[string]time.Time{}}
		for i := range 2000 {
			w.Observed[fmt.Sprintf("component:default/c%04d", i)] = time.Now()
		}
		if err := s.Commit(w); err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		b, _ := os.ReadFile(path)
		if err := os.WriteFile(path, b[:len(b)/3], 0o600); err != nil {
			t.Fatal(err)
		}
		c := &oneShot{t: t}
		_, errOut, code := c.run("serve", "--config", writeChildConfig(t, catURL, portURL, path))
		if code == 0 || !strings.Contains(errOut, path) || !strings.Contains(errOut, "truncated") || strings.Contains(errOut, "SIGBUS") || strings.Contains(errOut, "panic") {
			t.Fatalf("exit %d\n%s", code, errOut)
		}
	})

	t.Run("deleted while running, and a second daemon", func(t *testing.T) {
		path := filepath.Join(dir, "live.db")
		c := startChild(t, childEnv{catalogURL: catURL, portURL: portURL, statePath: path})
		second := &oneShot{t: t}
		_, errOut, code := second.run("serve", "--config", c.config)
		if code == 0 || !strings.Contains(errOut, "locked by another process") || !strings.Contains(errOut, path) {
			t.Fatalf("a second daemon on %s: exit %d\n%s", path, code, errOut)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := c.client().PublishChanges(ctx, &portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{change(t, component("after-delete", "x"))}})
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("changes were still acknowledged 10 s after the state file was deleted")
			}
			time.Sleep(100 * time.Millisecond)
		}
		done := make(chan error, 1)
		go func() { done <- c.cmd.Wait() }()
		select {
		case err := <-done:
			if err == nil || c.cmd.ProcessState.ExitCode() == 0 {
				t.Fatalf("the daemon exited 0 after losing its state file")
			}
			b, _ := os.ReadFile(c.log)
			if !strings.Contains(string(b), "deleted") {
				t.Fatalf("the log does not say why:\n%s", tail(b, 2000))
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the daemon kept running after losing its state file")
		}
	})
}

// emulators serves a catalog emulator with n generated entities (none when
// n is 0) and a Port emulator for the test's lifetime.
func emulators(t testing.TB, seed int64, n int) (cat *catalogtest.Emulator, catalogURL string, portEmu *porttest.Emulator, portURL string) {
	t.Helper()
	cat = catalogtest.New(catalogtest.Options{Token: "catalog-token-123", Seed: uint64(seed)})
	if n > 0 {
		if err := cat.UpsertAll(catalogtest.Generate(n, seed)); err != nil {
			t.Fatal(err)
		}
	}
	catSrv := httptest.NewServer(cat)
	t.Cleanup(catSrv.Close)
	portEmu = porttest.New(porttest.Options{})
	portSrv := httptest.NewServer(portEmu)
	t.Cleanup(portSrv.Close)
	return cat, catSrv.URL, portEmu, portSrv.URL
}

// writeChildConfig writes a serve config for the emulators and path.
func writeChildConfig(t *testing.T, catalogURL, portURL, path string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "portbridge.yaml")
	cfg := fmt.Sprintf("server:\n  listen: %s\n  token: process-test-token\nstate:\n  path: %s\nbackstage:\n  baseUrl: %s\n  token: catalog-token-123\nport:\n  baseUrl: %s\n  clientId: %s\n  clientSecret: %s\n",
		freeAddr(t), path, catalogURL, portURL, porttest.DefaultClientID, porttest.DefaultClientSecret)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// `sync --once` on a terminal draws a progress bar (through script(1),
// which gives it a pseudo-terminal); without one it logs progress lines.
func TestSyncOnceProgressBar(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) is not installed")
	}
	t.Parallel()
	o := newOneShot(t, "")
	if err := o.cat.UpsertAll(catalogtest.Generate(1500, 8)); err != nil {
		t.Fatal(err)
	}
	o.portEmu.InjectFaults(porttest.FaultSpec{Latency: 40 * time.Millisecond, Route: "POST /v1/blueprints/{b}/entities/bulk", For: time.Hour})
	bin, _ := buildOnce()
	out, err := exec.Command(script, "-qec", fmt.Sprintf("%s sync --once --config %s", bin, o.config), "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "entities") || !strings.Contains(string(out), "resync: ") || !strings.Contains(string(out), "%") {
		t.Fatalf("no progress bar on a terminal:\n%q", tail(out, 2000))
	}
	if strings.Contains(string(out), "resync progress") {
		t.Fatal("progress lines logged under the bar")
	}
}
