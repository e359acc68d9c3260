package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

// emuProc is an emulator running as its own process (`portbridge
// catalog-emulator` or `portbridge port-emulator`), so the bridge's
// measurements and the emulators' never share an address space.
type emuProc struct {
	name string
	cmd  *exec.Cmd
	url  string // base URL, e.g. http://127.0.0.1:41234
	log  string
	logf *os.File
	done chan struct{}
}

var firstURL = regexp.MustCompile(`http://[0-9.:]+`)

// startEmulator starts `portbridge <args>` and waits (up to timeout) for
// the line on stdout that names its URL.
func (g *rig) startEmulator(ctx context.Context, name string, timeout time.Duration, args ...string) (*emuProc, error) {
	p := &emuProc{name: name, log: filepath.Join(g.dir, name+".log"), done: make(chan struct{})}
	var err error
	if p.logf, err = os.Create(p.log); err != nil {
		return nil, fmt.Errorf("create the %s log: %w", name, err)
	}
	p.cmd = exec.Command(g.bin, args...)
	p.cmd.Stderr = g.logSink(p.logf)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		p.logf.Close()
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		p.logf.Close()
		return nil, fmt.Errorf("start portbridge %s: %w", strings.Join(args, " "), err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sent := false
		for sc.Scan() {
			fmt.Fprintln(p.logf, sc.Text())
			if u := firstURL.FindString(sc.Text()); u != "" && !sent {
				urls <- u
				sent = true
			}
		}
		_ = p.cmd.Wait()
		close(p.done)
	}()
	select {
	case p.url = <-urls:
		g.logf("%s (pid %d) serving on %s", name, p.cmd.Process.Pid, p.url)
		return p, nil
	case <-p.done:
		err = fmt.Errorf("portbridge %s exited before serving\nlog tail:\n%s", strings.Join(args, " "), fileTail(p.log, 2000))
	case <-time.After(timeout):
		err = fmt.Errorf("portbridge %s did not serve within %s", strings.Join(args, " "), timeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.stop()
	return nil, err
}

// stop sends SIGTERM, waits up to 10 s, then kills.
func (p *emuProc) stop() {
	defer p.logf.Close()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// cpu is the CPU time (user + system) the process used so far.
func (p *emuProc) cpu() (time.Duration, error) {
	return procCPU(p.cmd.Process.Pid)
}

// rss reads the process's resident memory now.
func (p *emuProc) rss() (procMem, error) { return readProcMem(p.cmd.Process.Pid) }

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTick = 100

// procCPU reads utime + stime of a process from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// the command name (field 2) may hold spaces; fields after ") " are plain
	i := bytes.LastIndex(b, []byte(") "))
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected utime/stime in /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// catalogPeer is the catalog emulator process with a client for it.
type catalogPeer struct {
	*emuProc
	client *catalog.Client
}

func (g *rig) startCatalog(ctx context.Context, n int) (*catalogPeer, error) {
	start := time.Now()
	p, err := g.startEmulator(ctx, fmt.Sprintf("catalog-emulator-%d", n), 15*time.Minute,
		"catalog-emulator", "--listen", "127.0.0.1:0", "--token", catalogToken, "--generate", strconv.Itoa(n), "--seed", "1")
	if err != nil {
		return nil, err
	}
	g.logf("catalog emulator generated %s entities in %s", count(n), secs(time.Since(start)))
	c, err := catalog.New(catalog.Config{BaseURL: p.url, Token: catalogToken, PageSize: 500})
	if err != nil {
		p.stop()
		return nil, err
	}
	return &catalogPeer{emuProc: p, client: c}, nil
}

func (c *catalogPeer) stats(ctx context.Context) (catalogtest.Stats, error) {
	var st catalogtest.Stats
	err := adminCall(ctx, http.MethodGet, c.url+"/_emulator/stats", nil, &st)
	return st, err
}

func (c *catalogPeer) resetStats(ctx context.Context) error {
	return adminCall(ctx, http.MethodDelete, c.url+"/_emulator/stats", nil, nil)
}

// refs lists every entity's ref (the cheap listing), sorted.
func (c *catalogPeer) refs(ctx context.Context) ([]string, error) {
	var out []string
	for v, err := range c.client.Versions(ctx, catalog.Query{ExcludeTotal: true}) {
		if err != nil {
			return nil, fmt.Errorf("list the catalog emulator: %w", err)
		}
		out = append(out, v.Ref)
	}
	slices.Sort(out)
	return out, nil
}

// get reads entities as the catalog API serves them.
func (c *catalogPeer) get(ctx context.Context, refs []string) ([]catalog.Entity, error) {
	out := make([]catalog.Entity, 0, len(refs))
	for f, err := range c.client.FetchByRefs(ctx, refs, nil) {
		if err != nil {
			return nil, fmt.Errorf("read entities from the catalog emulator: %w", err)
		}
		if f.Entity == nil {
			return nil, fmt.Errorf("catalog emulator lost %s", f.Ref)
		}
		out = append(out, f.Entity)
	}
	return out, nil
}

// upsert replaces entities in the catalog emulator (POST
// /_emulator/entities, JSON, 1,000 per request).
func (c *catalogPeer) upsert(ctx context.Context, ents []catalog.Entity) error {
	for start := 0; start < len(ents); start += 1000 {
		part := ents[start:min(start+1000, len(ents))]
		if err := adminCall(ctx, http.MethodPost, c.url+"/_emulator/entities", part, nil); err != nil {
			return fmt.Errorf("upsert %d entities into the catalog emulator: %w", len(part), err)
		}
	}
	return nil
}

// portPeer is the Port emulator process.
type portPeer struct {
	*emuProc
	token string
}

func (g *rig) startPort(ctx context.Context) (*portPeer, error) {
	p, err := g.startEmulator(ctx, "port-emulator", time.Minute, "port-emulator", "--listen", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var tok struct {
		AccessToken string `json:"accessToken"`
	}
	body := map[string]string{"clientId": porttest.DefaultClientID, "clientSecret": porttest.DefaultClientSecret}
	if err := adminCall(ctx, http.MethodPost, p.url+"/v1/auth/access_token", body, &tok); err != nil || tok.AccessToken == "" {
		p.stop()
		return nil, fmt.Errorf("get a Port emulator token: %v", err)
	}
	return &portPeer{emuProc: p, token: tok.AccessToken}, nil
}

func (p *portPeer) requests(ctx context.Context) (porttest.RequestCounts, error) {
	var rc porttest.RequestCounts
	err := adminCall(ctx, http.MethodGet, p.url+"/_emulator/requests", nil, &rc)
	return rc, err
}

func (p *portPeer) resetRequests(ctx context.Context) error {
	return adminCall(ctx, http.MethodDelete, p.url+"/_emulator/requests", nil, nil)
}

// count is the number of entities of a blueprint (0 for an unknown one).
func (p *portPeer) count(ctx context.Context, bp string) (int, error) {
	var out struct {
		Count int `json:"count"`
	}
	err := p.api(ctx, http.MethodGet, "/v1/blueprints/"+url.PathEscape(bp)+"/entities-count", &out)
	if err != nil && strings.Contains(err.Error(), "404") {
		return 0, nil
	}
	return out.Count, err
}

// entity reads one entity; ok is false when Port has none.
func (p *portPeer) entity(ctx context.Context, bp, id string) (map[string]any, bool, error) {
	var out struct {
		Entity map[string]any `json:"entity"`
	}
	err := p.api(ctx, http.MethodGet, "/v1/blueprints/"+url.PathEscape(bp)+"/entities/"+url.PathEscape(id), &out)
	if err != nil && strings.Contains(err.Error(), "404") {
		return nil, false, nil
	}
	return out.Entity, err == nil, err
}

func (p *portPeer) api(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, p.url+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	return doJSON(req, out)
}

// adminCall sends body as JSON (when not nil) and decodes the answer into
// out (when not nil).
func adminCall(ctx context.Context, method, u string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return doJSON(req, out)
}

func doJSON(req *http.Request, out any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read the answer: %w", req.Method, req.URL, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", req.Method, req.URL, resp.StatusCode, oneLine(string(b), 300))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode the answer: %w", req.Method, req.URL, err)
		}
	}
	return nil
}
