package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/config"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

// closedURL returns an http URL on loopback where nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	return "http://" + freeAddr(t)
}

func preflightConfig(backstageURL, backstageToken, portURL, clientID, clientSecret string) *config.Config {
	cfg := config.Default()
	cfg.Backstage.BaseURL, cfg.Backstage.Token = backstageURL, backstageToken
	cfg.Port.BaseURL, cfg.Port.ClientID, cfg.Port.ClientSecret = portURL, clientID, clientSecret
	return &cfg
}

func TestPreflight(t *testing.T) {
	t.Parallel()
	cat := httptest.NewServer(catalogtest.New(catalogtest.Options{Token: "catalog-token-123"}))
	t.Cleanup(cat.Close)
	emu := httptest.NewServer(porttest.New(porttest.Options{}))
	t.Cleanup(emu.Close)
	status := func(code int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprint(w, `{"ok":false,"error":"missing_permissions","message":"no"}`)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	closed := closedURL(t)
	withUser := strings.Replace(closed, "http://", "http://admin:hunter2@", 1) + "/?token=hunter3"
	id, secret := porttest.DefaultClientID, porttest.DefaultClientSecret
	for _, tc := range []struct {
		name string
		cfg  *config.Config
		want []string // substrings of the error, in order of peers; empty: no error
		not  []string
	}{
		{"both fine", preflightConfig(cat.URL, "catalog-token-123", emu.URL, id, secret), nil, nil},
		{"both closed", preflightConfig(withUser, "t", closed, id, secret),
			[]string{"2 peers are not usable", "Backstage at " + closed + "/: catalog base URL", "must not have a query", "check backstage.baseUrl (env PORTBRIDGE_BACKSTAGE_BASE_URL)",
				"Port at " + closed + ": connection refused", "check port.baseUrl (env PORTBRIDGE_PORT_BASE_URL)"},
			[]string{"hunter2", "hunter3", "admin"}},
		{"wrong tokens", preflightConfig(cat.URL, "wrong-token", emu.URL, id, "wrong"),
			[]string{"Backstage at " + cat.URL + ": answered 401 Unauthorized", "check backstage.token (env PORTBRIDGE_BACKSTAGE_TOKEN)",
				"Port at " + emu.URL + ": answered 401 Unauthorized", "check port.clientId (env PORTBRIDGE_PORT_CLIENT_ID), port.clientSecret (env PORTBRIDGE_PORT_CLIENT_SECRET)"},
			[]string{"wrong-token"}},
		{"no Backstage token", preflightConfig(cat.URL, "", emu.URL, id, secret), []string{"answered 401", "no token is configured"}, nil},
		{"no Port credentials", preflightConfig(cat.URL, "catalog-token-123", emu.URL, "", ""), []string{"Port at", "no credentials are configured", "port.clientId"}, nil},
		{"403", preflightConfig(status(403), "t", status(403), id, secret),
			[]string{"Backstage at", "answered 403 Forbidden", "backstage.token", "Port at", "answered 403 Forbidden (missing_permissions: no)", "port.clientSecret"}, nil},
		{"not Backstage", preflightConfig(status(404), "t", emu.URL, id, secret), []string{"answered 404", "without /api/catalog", "check backstage.baseUrl"}, nil},
		{"not Port", preflightConfig(cat.URL, "catalog-token-123", status(500), id, secret), []string{"Port at", "answered 500", "is port.baseUrl Port's API"}, nil},
		{"unknown host", preflightConfig("http://portbridge-test.invalid", "t", emu.URL, id, secret), []string{`cannot resolve host "portbridge-test.invalid"`}, nil},
		{"TLS to plain HTTP", preflightConfig(strings.Replace(cat.URL, "http://", "https://", 1), "t", emu.URL, id, secret), []string{"the server speaks plain HTTP, not HTTPS: use an http:// URL"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := preflight(context.Background(), tc.cfg, peerBackstage, peerPort)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(msg, n) {
					t.Errorf("error leaks %q:\n%s", n, msg)
				}
			}
		})
	}
}

// runBinary runs the real binary with a deadline and returns its combined
// output and exit code.
func runBinary(t *testing.T, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	out, _ := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("portbridge %v did not finish within %s:\n%s", args, timeout, out)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// The acceptance case of issue 17: `sync --once` (and --dry-run) with Port
// or Backstage unreachable, or refusing the credentials, fails within 10 s
// naming the URL, the cause and the config keys.
func TestSyncFailsFast(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	cat := httptest.NewServer(catalogtest.New(catalogtest.Options{Token: "catalog-token-123"}))
	defer cat.Close()
	emu := httptest.NewServer(porttest.New(porttest.Options{}))
	defer emu.Close()
	dir := t.TempDir()
	closed := closedURL(t)
	write := func(name, bsURL, bsToken, portURL, secret string) string {
		p := filepath.Join(dir, name)
		body := fmt.Sprintf("server: {token: unused-token}\nstate: {path: %s}\nbackstage: {baseUrl: %q, token: %s}\nport: {baseUrl: %q, clientId: %s, clientSecret: %s}\n",
			filepath.Join(dir, name+".db"), bsURL, bsToken, portURL, porttest.DefaultClientID, secret)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, config string
		want         []string
	}{
		{"Port closed", write("port-closed.yaml", cat.URL, "catalog-token-123", strings.Replace(closed, "http://", "http://u:secret-in-url@", 1), porttest.DefaultClientSecret),
			[]string{"Port at " + closed + ": connection refused", "check port.baseUrl"}},
		{"Backstage closed", write("bs-closed.yaml", closed, "catalog-token-123", emu.URL, porttest.DefaultClientSecret),
			[]string{"Backstage at " + closed + ": connection refused", "check backstage.baseUrl"}},
		{"401 from both", write("401.yaml", cat.URL, "wrong-token-1", emu.URL, "wrong-secret"),
			[]string{"answered 401", "check backstage.token (env PORTBRIDGE_BACKSTAGE_TOKEN)", "check port.clientId (env PORTBRIDGE_PORT_CLIENT_ID), port.clientSecret (env PORTBRIDGE_PORT_CLIENT_SECRET)"}},
	} {
		for _, dry := range []bool{true, false} {
			args := []string{"sync", "--once", "--config", tc.config}
			if dry {
				args = append(args, "--dry-run")
			}
			out, code := runBinary(t, 10*time.Second, args...)
			if code == 0 {
				t.Errorf("%s (dry run %v): exit 0\n%s", tc.name, dry, out)
			}
			for _, w := range append(tc.want, "cannot start") {
				if !strings.Contains(out, w) {
					t.Errorf("%s (dry run %v): output lacks %q:\n%s", tc.name, dry, w, out)
				}
			}
			if strings.Contains(out, "secret-in-url") || strings.Contains(out, "wrong-secret") {
				t.Errorf("%s: output leaks a secret:\n%s", tc.name, out)
			}
		}
	}
}

// serve does not stop on an unreachable peer (changes are queued), but its
// start log says what is wrong within seconds.
func TestServeLogsUnusablePeers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	closed := closedURL(t)
	c := startChild(t, childEnv{catalogURL: closed, portURL: closed, statePath: filepath.Join(t.TempDir(), "state.db")})
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(c.log)
		log := string(b)
		if strings.Contains(log, "Port is not usable") && strings.Contains(log, "Backstage is not usable") {
			for _, w := range []string{`"url":"` + closed + `"`, `"cause":"connection refused (nothing listens there)"`, `"check":"port.baseUrl"`, `"check":"backstage.baseUrl"`} {
				if !strings.Contains(log, w) {
					t.Errorf("log lacks %s:\n%s", w, log)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no preflight error in the log within 10 s:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
