// Package backstagetest installs and starts the real Backstage catalog
// backend in this directory (index.js, app-config.yaml, package-lock.json)
// as a test peer: one process per test on a free 127.0.0.1 port, with a
// static token, config file locations, a full-mutation entity provider that
// tests drive with SetEntities, and optional extra backend modules.
package backstagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultToken is the static token the backend accepts unless Options.Token
// says otherwise (Backstage wants at least 8 characters, no whitespace).
const DefaultToken = "portbridge-test-token-0123456789"

// Options configures one backend.
type Options struct {
	// Locations are catalog YAML files registered as config `file`
	// locations (made absolute).
	Locations []string
	// Entities is the initial content of the full-mutation provider.
	Entities []map[string]any
	// Token is the static token; empty means DefaultToken.
	Token string
	// ExpectTotal: readiness waits until by-query reports this many
	// entities. 0 waits only for the catalog to answer 200.
	ExpectTotal int
	// ExtraModules are paths of backend features (plugins or modules) that
	// index.js adds with backend.add(require(path)).
	ExtraModules []string
	// Env holds extra environment variables (e.g. APP_CONFIG_* overrides).
	Env []string
	// ConfigFiles are extra --config files merged over app-config.yaml.
	ConfigFiles []string
	// StartTimeout bounds install-free start-up; 0 means 2 minutes.
	StartTimeout time.Duration
}

// Backend is a running real Backstage catalog backend.
type Backend struct {
	URL          string // base URL, e.g. http://127.0.0.1:41234 (clients add /api/catalog)
	Token        string
	ProviderFile string // the file the full-mutation provider reads
	LogFile      string

	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
}

// Dir is the harness directory (this package's source directory).
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Require fails the test with a clear message when node or npm is missing,
// or skips it in -short mode (real-backend tests take minutes).
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real Backstage backend; skipped with -short")
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the real Backstage harness needs %s on PATH (Node.js 20+ with headers in /usr/include/node): %v; run with -short to skip", tool, err)
		}
	}
}

// Install runs `npm ci` in the harness directory when node_modules is
// missing or older than package-lock.json. A file lock keeps parallel test
// processes from installing at once.
func Install(ctx context.Context) error {
	dir := Dir()
	lockPath := filepath.Join(dir, "package-lock.json")
	lock, err := os.ReadFile(lockPath)
	if err != nil {
		return fmt.Errorf("read %s: %w", lockPath, err)
	}
	sum := sha256.Sum256(lock)
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join(dir, "node_modules", ".portbridge-lock-sha256")
	if b, err := os.ReadFile(stamp); err == nil && string(b) == want {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(dir, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("open install lock: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("take install lock: %w", err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if b, err := os.ReadFile(stamp); err == nil && string(b) == want {
		return nil // another process installed meanwhile
	}
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "npm_config_nodedir=/usr")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("npm ci in %s: %w\n%s", dir, err, tail(out, 4000))
	}
	if err := os.WriteFile(stamp, []byte(want), 0o644); err != nil {
		return fmt.Errorf("write install stamp: %w", err)
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Start installs the harness if needed, starts a backend and waits until it
// is ready. The process group is killed when the test ends.
func Start(t testing.TB, opts Options) *Backend {
	t.Helper()
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := Install(ctx); err != nil {
		t.Fatalf("install the real Backstage harness: %v", err)
	}
	b, err := start(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("start real Backstage: %v", err)
	}
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			if log, err := os.ReadFile(b.LogFile); err == nil {
				t.Logf("backstage log (tail):\n%s", tail(log, 6000))
			}
		}
	})
	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	wctx, wcancel := context.WithTimeout(context.Background(), timeout)
	defer wcancel()
	if err := b.WaitTotal(wctx, opts.ExpectTotal); err != nil {
		t.Fatalf("real Backstage not ready: %v", err)
	}
	return b
}

func start(tmp string, opts Options) (*Backend, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	token := opts.Token
	if token == "" {
		token = DefaultToken
	}
	b := &Backend{
		URL:          "http://127.0.0.1:" + strconv.Itoa(port),
		Token:        token,
		ProviderFile: filepath.Join(tmp, "provider-entities.json"),
		LogFile:      filepath.Join(tmp, "backstage.log"),
		done:         make(chan struct{}),
	}
	if err := b.SetEntities(opts.Entities...); err != nil {
		return nil, err
	}
	locs := make([]map[string]string, 0, len(opts.Locations))
	for _, l := range opts.Locations {
		abs, err := filepath.Abs(l)
		if err != nil {
			return nil, fmt.Errorf("location %s: %w", l, err)
		}
		locs = append(locs, map[string]string{"type": "file", "target": abs})
	}
	locJSON, _ := json.Marshal(locs)
	access, _ := json.Marshal([]any{map[string]any{"type": "static", "options": map[string]string{"token": token, "subject": "portbridge-tests"}}})
	args := []string{"index.js", "--config", "app-config.yaml"}
	for _, c := range opts.ConfigFiles {
		args = append(args, "--config", c)
	}
	cmd := exec.Command("node", args...)
	cmd.Dir = Dir()
	cmd.Env = append(os.Environ(),
		"APP_CONFIG_backend_listen_port="+strconv.Itoa(port),
		"APP_CONFIG_backend_baseUrl="+b.URL,
		"APP_CONFIG_catalog_locations="+string(locJSON),
		"APP_CONFIG_harness_providerFile="+b.ProviderFile,
		"APP_CONFIG_backend_auth_externalAccess="+string(access),
		"PORTBRIDGE_EXTRA_MODULES="+strings.Join(opts.ExtraModules, ","),
	)
	cmd.Env = append(cmd.Env, opts.Env...)
	log, err := os.Create(b.LogFile)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start node index.js: %w", err)
	}
	b.cmd = cmd
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(b.done)
	}()
	return b, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// PID is the node process id (also its process group id).
func (b *Backend) PID() int { return b.cmd.Process.Pid }

// Stop sends SIGTERM to the process group, and SIGKILL after 5 s.
func (b *Backend) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.done:
		return
	default:
	}
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.done
	}
}

// SetEntities replaces the provider's entities; the backend applies them as
// a full mutation within about 0.2 s, visible in the API after processing
// and stitching (1–2 s). Removed entities are deleted.
func (b *Backend) SetEntities(entities ...map[string]any) error {
	if entities == nil {
		entities = []map[string]any{}
	}
	data, err := json.Marshal(entities)
	if err != nil {
		return fmt.Errorf("encode provider entities: %w", err)
	}
	tmp := b.ProviderFile + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write provider entities: %w", err)
	}
	if err := os.Rename(tmp, b.ProviderFile); err != nil {
		return fmt.Errorf("write provider entities: %w", err)
	}
	return nil
}

// WaitTotal polls by-query until totalItems equals want (or, for want 0,
// until the catalog answers 200 at all).
func (b *Backend) WaitTotal(ctx context.Context, want int) error {
	var last string
	for {
		select {
		case <-b.done:
			return fmt.Errorf("backend exited (log %s); last answer: %s", b.LogFile, last)
		default:
		}
		total, err := b.total(ctx)
		switch {
		case err != nil:
			last = err.Error()
		case want == 0 || total == want:
			return nil
		default:
			last = fmt.Sprintf("totalItems %d, want %d", total, want)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last answer: %s", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (b *Backend) total(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+"/api/catalog/entities/by-query?limit=0", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+b.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(buf.String()))
	}
	var p struct {
		TotalItems *int `json:"totalItems"`
	}
	if err := json.Unmarshal(buf.Bytes(), &p); err != nil || p.TotalItems == nil {
		return 0, errors.New("by-query answer without totalItems")
	}
	return *p.TotalItems, nil
}
