package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/portbridge/portbridge/client"
	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/sidecar/catalog"
)

// marker prefixes the descriptions the latency row publishes; the sequence
// number follows it.
const marker = "portbridge bench change #"

// bulkRecorder wraps the Port emulator. While active it timestamps the
// arrival of every bulk upsert and, once the emulator answered it with
// 2xx, records the first arrival of each marked description in it.
type bulkRecorder struct {
	next   http.Handler
	active atomic.Bool

	mu      sync.Mutex
	arrived map[int]time.Time
}

func (b *bulkRecorder) start() {
	b.mu.Lock()
	b.arrived = map[int]time.Time{}
	b.mu.Unlock()
	b.active.Store(true)
}

func (b *bulkRecorder) arrivals() map[int]time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.arrived)
}

func (b *bulkRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !b.active.Load() || r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/v1/blueprints/") || !strings.HasSuffix(r.URL.Path, "/entities/bulk") {
		b.next.ServeHTTP(w, r)
		return
	}
	at := time.Now()
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		http.Error(w, "bench recorder: read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	b.next.ServeHTTP(sw, r)
	if sw.status/100 != 2 {
		return
	}
	var req struct {
		Entities []struct {
			Properties map[string]any `json:"properties"`
		} `json:"entities"`
	}
	if json.Unmarshal(body, &req) != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range req.Entities {
		d, _ := e.Properties["description"].(string)
		rest, ok := strings.CutPrefix(d, marker)
		if !ok {
			continue
		}
		seq, err := strconv.Atoi(rest)
		if err != nil {
			continue
		}
		if _, seen := b.arrived[seq]; !seen {
			b.arrived[seq] = at
		}
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// measureLatency is row 4: `portbridge serve` as a child process gets
// PublishChanges calls at cfg.Rate changes per second, one changed entity
// each; the latency of a change is from just before its PublishChanges
// call to the arrival at the Port emulator of the bulk upsert carrying it.
func measureLatency(ctx context.Context, g *rig, rep *Report) {
	const what = "notification → Port latency"
	total := min(int(g.cfg.Rate*g.cfg.Duration.Seconds()), g.n-1)
	if total < 1 {
		rep.fail(what, fmt.Errorf("-rate × -duration gives no change to publish"))
		return
	}
	refs, err := g.refs(ctx)
	if err != nil {
		rep.fail(what, err)
		return
	}
	warmRef := refs[len(refs)-1]
	changes, err := prepareChanges(ctx, g, spread(refs[:len(refs)-1], total))
	if err != nil {
		rep.fail(what, err)
		return
	}
	// The recorder in front of the Port emulator timestamps bulk requests.
	target, err := url.Parse(g.port.url)
	if err != nil {
		rep.fail(what, err)
		return
	}
	g.recorder = &bulkRecorder{next: httputil.NewSingleHostReverseProxy(target)}
	recSrv := httptest.NewServer(g.recorder)
	defer recSrv.Close()
	sc, err := g.startServe(ctx, recSrv.URL)
	if err != nil {
		rep.fail(what, err)
		return
	}
	defer sc.stop()
	cl, err := client.New(sc.url, serverToken)
	if err != nil {
		rep.fail(what, err)
		return
	}
	defer cl.Close()

	// Warm up: the first change waits for the engine's blueprint setup and
	// opens the connections; it is not measured.
	if err := warmUp(ctx, g, cl, warmRef); err != nil {
		rep.fail(what, fmt.Errorf("%w\nsidecar log tail:\n%s", err, fileTail(sc.log, 3000)))
		return
	}

	g.logf("publishing %d changes at %g/s to portbridge serve", total, g.cfg.Rate)
	g.recorder.start()
	sent := make([]time.Time, total)
	acks := make([]time.Duration, total)
	var errMu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / g.cfg.Rate)
	start := time.Now()
	for i, ch := range changes {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Go(func() {
			ch.ObservedAt = timestamppb.Now()
			sent[i] = time.Now()
			_, err := cl.PublishChanges(ctx, &portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{ch}, Source: "portbridge-bench"})
			acks[i] = time.Since(sent[i])
			if err != nil {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	publishTime := time.Since(start)
	// Wait for the stragglers (at most 10 s after the last acknowledgement).
	deadline := time.Now().Add(10 * time.Second)
	var arrived map[int]time.Time
	for {
		arrived = g.recorder.arrivals()
		if len(arrived) >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.recorder.active.Store(false)
	if len(errs) > 0 {
		rep.fail(what, fmt.Errorf("%d of %d PublishChanges calls failed, first: %w", len(errs), total, errs[0]))
		return
	}
	var lat []time.Duration
	for i := range total {
		if at, ok := arrived[i]; ok {
			lat = append(lat, at.Sub(sent[i]))
		}
	}
	if len(lat) == 0 {
		rep.fail(what, fmt.Errorf("none of %d changes reached Port within 10 s\nsidecar log tail:\n%s", total, fileTail(sc.log, 3000)))
		return
	}
	slices.Sort(lat)
	slices.Sort(acks)
	achieved := float64(total) / publishTime.Seconds()
	p99 := percentile(lat, 0.99)
	rep.row(fmt.Sprintf("notification → Port p50 (%.0f changes/s)", achieved), ms(percentile(lat, 0.50)), "", Info)
	rep.check(fmt.Sprintf("notification → Port p99 (%.0f changes/s)", achieved), ms(p99), "≤ 50 ms", p99 <= 50*time.Millisecond && len(lat) == total)
	m := sc.watch.current()
	rep.row("serve during the latency run: peak RssAnon / RssFile", mb(m.Anon)+" / "+mb(m.File), "", Info)
	if lost := total - len(lat); lost > 0 {
		rep.check("changes that never reached Port (10 s)", count(lost), "0", false)
	}
	rep.note("Latency: `portbridge serve` (same binary, same emulators and state file, sync.resyncOnStart false, no resync or verify timer) "+
		"on a free loopback port; after /readyz and one unmeasured warm-up change, the Go client (client.New, Connect protocol) publishes "+
		"%d changes, one per PublishChanges call, scheduled every %s (%.0f/s achieved over %s), each a different catalog entity whose "+
		"description carries a sequence number (entity bodies from the catalog emulator after Upsert, so uid and etag are current; "+
		"Change built as sidecar/poller does). Latency = arrival time of the first successful Port bulk upsert carrying that description "+
		"(a reverse proxy in the bench process, in front of the Port emulator process, timestamps each bulk request on arrival) minus the time just before PublishChanges. "+
		"%d of %d arrived; max %s. PublishChanges acknowledgement (durable enqueue): p50 %s, p99 %s. The Backstage module's poll interval "+
		"is not included. The emulators and the bench share the machine's cores with the sidecar, so this row is noisy.",
		total, interval, achieved, secs(publishTime), len(lat), total, ms(lat[len(lat)-1]), ms(percentile(acks, 0.5)), ms(percentile(acks, 0.99)))
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// prepareChanges gives each ref a marked description in the catalog
// emulator and builds the upsert Change the Backstage module would send.
func prepareChanges(ctx context.Context, g *rig, refs []string) ([]*portbridgev1.Change, error) {
	edited, err := g.cat.get(ctx, refs)
	if err != nil {
		return nil, err
	}
	for seq, e := range edited {
		if err := describe(e, marker+strconv.Itoa(seq)); err != nil {
			return nil, err
		}
	}
	if err := g.cat.upsert(ctx, edited); err != nil {
		return nil, err
	}
	return upsertChanges(ctx, g, refs)
}

// upsertChanges builds the Changes for the catalog's current bodies.
func upsertChanges(ctx context.Context, g *rig, refs []string) ([]*portbridgev1.Change, error) {
	ents, err := g.cat.get(ctx, refs)
	if err != nil {
		return nil, err
	}
	changes := make([]*portbridgev1.Change, 0, len(refs))
	for i, e := range ents {
		md, _ := e["metadata"].(map[string]any)
		uid, _ := md["uid"].(string)
		etag, _ := md["etag"].(string)
		st, err := structpb.NewStruct(e)
		if err != nil {
			return nil, fmt.Errorf("encode %s as a protobuf Struct: %w", refs[i], err)
		}
		changes = append(changes, &portbridgev1.Change{EntityRef: refs[i], Uid: uid, Etag: etag, ObservedAt: timestamppb.Now(),
			Change: &portbridgev1.Change_Upserted{Upserted: &portbridgev1.Upserted{Entity: st}}})
	}
	return changes, nil
}

// warmUp publishes one change and waits until the Port emulator holds it.
func warmUp(ctx context.Context, g *rig, cl *client.Client, ref string) error {
	const description = "portbridge bench warm-up"
	ents, err := g.cat.get(ctx, []string{ref})
	if err != nil {
		return err
	}
	if err := describe(ents[0], description); err != nil {
		return err
	}
	if err := g.cat.upsert(ctx, ents); err != nil {
		return err
	}
	chs, err := upsertChanges(ctx, g, []string{ref})
	if err != nil {
		return err
	}
	if _, err := cl.PublishChanges(ctx, &portbridgev1.PublishChangesRequest{Changes: chs, Source: "portbridge-bench"}); err != nil {
		return fmt.Errorf("publish the warm-up change: %w", err)
	}
	r, err := catalog.ParseCanonicalRef(ref)
	if err != nil {
		return fmt.Errorf("parse %s: %w", ref, err)
	}
	bp, id := strings.ToLower(r.Kind), strings.ToLower(ref)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		e, ok, err := g.port.entity(ctx, bp, id)
		if err != nil {
			return err
		}
		if props, _ := e["properties"].(map[string]any); ok && props["description"] == description {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("the warm-up change of %s did not reach Port entity %s/%s within 60 s", ref, bp, id)
}

// serveChild is a running `portbridge serve`.
type serveChild struct {
	cmd   *exec.Cmd
	url   string
	log   string
	logf  *os.File
	watch *memWatch
}

// startServe starts `portbridge serve` writing to Port at portURL.
func (g *rig) startServe(ctx context.Context, portURL string) (*serveChild, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	config, err := g.writeConfig("serve", childConfig{listen: addr, portURL: portURL})
	if err != nil {
		return nil, err
	}
	sc := &serveChild{url: "http://" + addr, log: filepath.Join(g.dir, "serve.log")}
	if sc.logf, err = os.Create(sc.log); err != nil {
		return nil, err
	}
	sc.cmd = exec.Command(g.bin, "serve", "--config", config)
	sc.cmd.Stdout = g.logSink(sc.logf)
	sc.cmd.Stderr = sc.cmd.Stdout
	if err := sc.cmd.Start(); err != nil {
		sc.logf.Close()
		return nil, fmt.Errorf("start portbridge serve: %w", err)
	}
	sc.watch = watchMem(sc.cmd.Process.Pid)
	g.logf("portbridge serve (pid %d) on %s", sc.cmd.Process.Pid, addr)
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sc.url+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return sc, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			sc.stop()
			return nil, fmt.Errorf("portbridge serve not ready on %s within 60 s (last: %v)\nlog tail:\n%s", addr, err, fileTail(sc.log, 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits up to 10 s, then kills.
func (sc *serveChild) stop() {
	defer sc.logf.Close()
	defer sc.watch.stop()
	if sc.cmd.ProcessState != nil {
		return
	}
	_ = sc.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = sc.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = sc.cmd.Process.Kill()
		<-done
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
