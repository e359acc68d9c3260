package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	creds := "port:\n  clientId: id\n  clientSecret: secret\n"
	badMapping := write("bad-mapping.yaml", "resources:\n  - kind: component\n    selector:\n      query: '.spec.type | | x'\n    port:\n      entity:\n        mappings:\n          identifier: .metadata.name\n          blueprint: '\"component\"'\n")
	cases := []struct {
		name, body string
		code       int
		want       string
	}{
		{"valid", "server:\n  token: t0ken-123\n" + creds, 0, "is valid: 10 mapping resources"},
		{"unknown key", "server:\n  token: t\n  tokn: x\n" + creds, 1, ".yaml:3: error: unknown key server.tokn"},
		{"bad mapping file", "server:\n  token: t\nmapping:\n  file: " + badMapping + "\n" + creds, 1, "jq syntax error"},
		{"missing mapping file", "server:\n  token: t\nmapping:\n  file: /nonexistent.yaml\n" + creds, 1, "key mapping.file"},
		{"no Port credentials", "server:\n  token: t0ken-123\n", 1, "port.clientId and port.clientSecret must be set"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := write(c.name+".yaml", c.body)
			var out, errb bytes.Buffer
			code := run(context.Background(), []string{"config", "check", "--offline", "--config", p}, &out, &errb)
			if code != c.code || !strings.Contains(out.String()+errb.String(), c.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, out.String(), errb.String(), c.code, c.want)
			}
		})
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"config"}, &out, &errb); code == 0 {
		t.Fatal("config without check succeeded")
	}
	if code := run(context.Background(), []string{"nonsense"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
}

// Issue 13: `config check` and `serve` disagreed (token whitespace, missing
// Port credentials called valid). They run the same check: every config
// either fails both for the same reason, or passes the check and serves.
func TestConfigCheckAndServeAgree(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badBlueprints := write("bad-blueprints.json", `[{"identifier": 3}]`)
	badMapping := write("bad-mapping.yaml", "resources:\n  - kind: component\n    selector:\n      query: 'true'\n    port:\n      entity:\n        mappings:\n          identifier: .metadata.name\n          blueprint: '\"component\"'\n          title: '$__pb_w'\n")
	badCert := write("cert.pem", "not a certificate")
	base := func(extra string) string {
		return fmt.Sprintf("server:\n  listen: 127.0.0.1:0\n  token: tok-123456\nstate:\n  path: %s\nbackstage:\n  baseUrl: http://127.0.0.1:9\nport:\n  baseUrl: http://127.0.0.1:9\n  clientId: id\n  clientSecret: secret\nsync:\n  resyncOnStart: false\n%s",
			filepath.Join(dir, fmt.Sprintf("state-%d.db", time.Now().UnixNano())), extra)
	}
	cases := []struct{ name, body, want string }{
		{"valid", base(""), ""},
		{"token with a trailing newline", strings.Replace(base(""), "token: tok-123456", `token: "tok-123456\n"`, 1), "key server.token: has leading or trailing whitespace"},
		{"client secret with a trailing space", strings.Replace(base(""), "clientSecret: secret", `clientSecret: "secret "`, 1), "key port.clientSecret: has leading or trailing whitespace"},
		{"no Port credentials", strings.Replace(base(""), "  clientId: id\n  clientSecret: secret\n", "", 1), "key port.clientId"},
		{"bad blueprints file", base("mapping:\n  blueprintsFile: " + badBlueprints + "\n"), "key mapping.blueprintsFile"},
		{"mapping with a reserved name", base("mapping:\n  file: " + badMapping + "\n"), "reserved"},
		{"unreadable TLS certificate", strings.Replace(base(""), "  token: tok-123456\n", "  token: tok-123456\n  tls:\n    certFile: "+badCert+"\n    keyFile: "+badCert+"\n", 1), "key server.tls"},
		{"limit over its ceiling", base("limits:\n  maxDepth: 100000\n"), "key limits.maxDepth"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := write(strings.ReplaceAll(c.name, " ", "-")+".yaml", c.body)
			var out, errb bytes.Buffer
			checkCode := run(context.Background(), []string{"config", "check", "--offline", "--config", p}, &out, &errb)
			checkErr := out.String() + errb.String()

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg, err := loadConfig(p)
			if err == nil {
				err = serve(ctx, cfg, slog.New(slog.DiscardHandler), func(string) { cancel() })
			}
			switch {
			case c.want == "":
				if checkCode != 0 || err != nil {
					t.Fatalf("config check: exit %d %s; serve: %v", checkCode, checkErr, err)
				}
			case checkCode == 0 || err == nil:
				t.Fatalf("config check: exit %d; serve: %v; want both to fail with %q", checkCode, err, c.want)
			case !strings.Contains(checkErr, c.want) || !strings.Contains(err.Error(), c.want):
				t.Fatalf("config check said %q, serve said %q; want both to name %q", checkErr, err, c.want)
			}
		})
	}
}
