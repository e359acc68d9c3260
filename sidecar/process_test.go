package main

// Process-level tests: the real binary as a child process, killed with
// SIGKILL at the worst moments, against the catalog and Port emulators
// served from this test process.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/portbridge/portbridge/client"
	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "portbridge-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "portbridge")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// child is a running `portbridge serve`.
type child struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	token  string
	config string
	log    string
}

type childEnv struct {
	catalogURL, portURL string
	statePath           string
	resyncOnStart       bool
	env                 []string // extra environment (PORTBRIDGE_* overrides)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startChild(t *testing.T, env childEnv) *child {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	c := &child{t: t, url: "http://" + addr, token: "process-test-token", config: filepath.Join(dir, "portbridge.yaml"), log: filepath.Join(dir, "portbridge.log")}
	cfg := fmt.Sprintf(`server:
  listen: %s
  token: %s
state:
  path: %s
backstage:
  baseUrl: %s
  token: catalog-token-123
  pageSize: 200
port:
  baseUrl: %s
  clientId: %s
  clientSecret: %s
sync:
  resyncOnStart: %v
  deleteGracePeriod: 100ms
log:
  level: info
`, addr, c.token, env.statePath, env.catalogURL, env.portURL, porttest.DefaultClientID, porttest.DefaultClientSecret, env.resyncOnStart)
	if err := os.WriteFile(c.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(bin, "serve", "--config", c.config)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.Env = append(append(os.Environ(), "PORTBRIDGE_PORT_MAX_CONCURRENCY=4"), env.env...)
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(c.log)
			t.Logf("sidecar log:\n%s", tail(b, 4000))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(c.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(c.log)
			t.Fatalf("sidecar did not become healthy: %v\n%s", err, tail(b, 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (c *child) kill9() {
	c.t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	_ = c.cmd.Wait()
}

func (c *child) client() *client.Client {
	cl, err := client.New(c.url, c.token, client.WithRetry(0, 0))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(cl.Close)
	return cl
}

func change(t *testing.T, ent catalog.Entity) *portbridgev1.Change {
	t.Helper()
	ref, err := catalog.RefOf(ent)
	if err != nil {
		t.Fatal(err)
	}
	st, err := structpb.NewStruct(ent)
	if err != nil {
		t.Fatal(err)
	}
	return &portbridgev1.Change{EntityRef: ref.String(), ObservedAt: timestamppb.Now(), Change: &portbridgev1.Change_Upserted{Upserted: &portbridgev1.Upserted{Entity: st}}}
}

func component(name, description string) catalog.Entity {
	return catalog.Entity{"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
		"metadata": map[string]any{"name": name, "namespace": "default", "description": description},
		"spec":     map[string]any{"type": "service", "lifecycle": "production", "owner": "team-a"}}
}

// The foundation's durability promise: a batch acknowledged by
// PublishChanges is on disk, whatever happens to the process right after.
func TestQueueSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	t.Parallel()
	// Port and Backstage are unreachable: nothing can be applied, so
	// everything acknowledged must still be queued after the restart.
	env := childEnv{catalogURL: "http://127.0.0.1:9", portURL: "http://127.0.0.1:9", statePath: filepath.Join(t.TempDir(), "state.db")}
	c := startChild(t, env)
	cl := c.client()
	acked := 0
	for i := range 20 {
		var batch []*portbridgev1.Change
		for j := range 25 {
			batch = append(batch, change(t, component(fmt.Sprintf("svc-%d-%d", i, j), "v1")))
		}
		resp, err := cl.PublishChanges(context.Background(), &portbridgev1.PublishChangesRequest{Changes: batch})
		if err != nil {
			t.Fatal(err)
		}
		acked += int(resp.GetAccepted())
	}
	c.kill9() // right after the last answer

	c2 := startChild(t, env)
	st, err := c2.client().GetStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := st.GetQueue().GetDepth(); got != uint64(acked) {
		t.Fatalf("queue depth after kill -9 and restart: %d, acknowledged %d", got, acked)
	}
}

// Issue 6: kill -9 during a burst of 1,000 notifications; after the restart
// every acknowledged change reaches Port.
func TestBurstSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	t.Parallel()
	_, catURL, portEmu, portURL := emulators(t, 2, 0)
	env := childEnv{catalogURL: catURL, portURL: portURL, statePath: filepath.Join(t.TempDir(), "state.db")}
	c := startChild(t, env)
	cl := c.client()

	var acked sync.Map // identifier -> description
	var n atomic.Int64
	var publishErr atomic.Pointer[error]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 40 {
			var batch []*portbridgev1.Change
			var ids []string
			for j := range 25 {
				name := fmt.Sprintf("burst-%d-%d", i, j)
				batch = append(batch, change(t, component(name, "burst "+name)))
				ids = append(ids, "component:default/"+name)
			}
			if _, err := cl.PublishChanges(ctx, &portbridgev1.PublishChangesRequest{Changes: batch}); err != nil {
				publishErr.Store(&err)
				return // the process died under us: this batch was not acknowledged
			}
			for _, id := range ids {
				acked.Store(id, "burst "+id[len("component:default/"):])
			}
			n.Add(int64(len(ids)))
		}
	}()
	// Kill it in the middle of the burst; a burst that stopped by itself
	// (an error before the kill) ends the wait too.
	waitUntil := time.Now().Add(2 * time.Minute)
	for n.Load() < 500 {
		select {
		case <-done:
			if p := publishErr.Load(); p != nil {
				t.Fatalf("publishing stopped before the kill: %v", *p)
			}
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(waitUntil) {
			t.Fatalf("only %d changes acknowledged in 2 minutes", n.Load())
		}
	}
	c.kill9()
	cancel()
	<-done
	total := int(n.Load())
	if total < 500 {
		t.Fatalf("only %d acknowledged", total)
	}

	startChild(t, env)
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := 0
		acked.Range(func(k, v any) bool {
			r, ok := portEmu.Entity("component", k.(string))
			if !ok || r.Entity.Properties["description"] != v {
				missing++
			}
			return true
		})
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged changes never reached Port", missing, total)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d acknowledged changes before kill -9, all in Port after the restart", total)
}

// Issue 6: kill -9 during a resync; the next start converges with no
// duplicates and no wrong deletes.
func TestResyncSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	t.Parallel()
	cat, catURL, portEmu, portURL := emulators(t, 3, 3000)
	// Slow Port down so the kill lands in the middle of the resync.
	portEmu.InjectFaults(porttest.FaultSpec{Latency: 20 * time.Millisecond, Route: "POST /v1/blueprints/{b}/entities/bulk", For: time.Hour})
	env := childEnv{catalogURL: catURL, portURL: portURL, statePath: filepath.Join(t.TempDir(), "state.db"), resyncOnStart: true}
	c := startChild(t, env)
	// A Port entity that is not ours, in a blueprint we manage.
	waitFor(t, "the component blueprint", time.Minute, func() bool { _, ok := portEmu.Blueprint("component"); return ok })
	if _, err := portEmu.PutEntity("component", port.Entity{Identifier: "foreign", Title: "Not ours"}, "someone-else", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the resync writing", time.Minute, func() bool { return portEmu.Requests().ByRoute["POST /v1/blueprints/{b}/entities/bulk"] >= 10 })
	c.kill9()
	portEmu.ClearFaults()

	c2 := startChild(t, env)
	cl := c2.client()
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := cl.GetStatus(context.Background())
		if err == nil && st.GetLastResync().GetState() == "succeeded" {
			break
		}
		if err == nil && st.GetLastResync().GetState() == "failed" {
			t.Fatalf("resync after restart failed: %s", st.GetLastResync().GetError())
		}
		if time.Now().After(deadline) {
			t.Fatal("no successful resync after the restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	inPort := map[string]int{}
	for _, bp := range []string{"component", "api", "resource", "system", "domain", "group", "user", "location", "template", "backstageEntity"} {
		for _, e := range portEmu.Entities(bp) {
			inPort[e.Identifier.(string)]++
		}
	}
	for _, ref := range cat.Refs() {
		switch inPort[ref] {
		case 1:
		case 0:
			t.Errorf("%s missing in Port after convergence", ref)
		default:
			t.Errorf("%s appears %d times in Port", ref, inPort[ref])
		}
	}
	if _, ok := portEmu.Entity("component", "foreign"); !ok {
		t.Error("the foreign entity was deleted")
	}
}

// `portbridge sync --once` is the CI mode: exit 0 after a good resync, non-zero
// when the resync fails; --dry-run prints the plan and writes nothing.
func TestSyncOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	cat, catURL, portEmu, portURL := emulators(t, 4, 50)
	dir := t.TempDir()
	write := func(catalogURL string) string {
		p := filepath.Join(dir, fmt.Sprintf("cfg-%d.yaml", time.Now().UnixNano()))
		cfg := fmt.Sprintf("server:\n  token: unused-token\nstate:\n  path: %s\nbackstage:\n  baseUrl: %s\n  token: catalog-token-123\nport:\n  baseUrl: %s\n  clientId: %s\n  clientSecret: %s\n",
			filepath.Join(dir, "state.db"), catalogURL, portURL, porttest.DefaultClientID, porttest.DefaultClientSecret)
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write(catURL)
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		out, _ := cmd.Output()
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := run("sync", "--once", "--dry-run", "--config", good)
	if code != 0 || !strings.Contains(out, "Plan: 50 to create") || portEmu.Requests().Writes != 0 {
		t.Fatalf("dry run: exit %d, %d writes, output:\n%s", code, portEmu.Requests().Writes, out)
	}
	if out, code = run("sync", "--once", "--config", good); code != 0 || !strings.Contains(out, "succeeded") {
		t.Fatalf("sync: exit %d\n%s", code, out)
	}
	if n := len(portEmu.Entities("component")); n == 0 {
		t.Fatal("nothing in Port after sync --once")
	}
	cat.FailAfter(0, 503)
	if out, code = run("sync", "--once", "--config", good); code == 0 {
		t.Fatalf("sync over a failing catalog exited 0:\n%s", out)
	}
	if _, code = run("sync", "--config", good); code == 0 {
		t.Fatal("sync without --once exited 0")
	}
}
