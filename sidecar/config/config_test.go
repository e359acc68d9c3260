package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/limits"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "portbridge.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	t.Parallel()
	p := write(t, `
server:
  listen: 127.0.0.1:9090
  token: ${SIDECAR_TOKEN}
  maxRequestBytes: ${MAX_BYTES:-4096}
backstage:
  baseUrl: http://backstage:7007
  token: "${BS_TOKEN}"
port:
  clientId: id
  clientSecret: ${PORT_SECRET}
  integration:
    identifier: backstage-prod
sync:
  policy: upsert-only
  deleteGracePeriod: 45s
mapping:
  file: cost$$.yaml
`)
	cfg, err := Load(p, env(map[string]string{
		"SIDECAR_TOKEN": "tok-123456", "BS_TOKEN": "true", "PORT_SECRET": "s3cret",
		"PORTBRIDGE_SYNC_WORKERS": "7", "PORTBRIDGE_PORT_CLIENT_ID": "override-id", "PORTBRIDGE_SYNC_RESYNC_INTERVAL": "2h",
	}))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Server.Listen, "127.0.0.1:9090"},
		{"token", cfg.Server.Token, "tok-123456"},
		{"default in ${:-}", cfg.Server.MaxRequestBytes, int64(4096)},
		{"quoted stays a string", cfg.Backstage.Token, "true"},
		{"env override", cfg.Port.ClientID, "override-id"},
		{"env int", cfg.Sync.Workers, 7},
		{"env duration", cfg.Sync.ResyncInterval.D(), 2 * time.Hour},
		{"file duration", cfg.Sync.DeleteGracePeriod.D(), 45 * time.Second},
		{"default kept", cfg.Backstage.PageSize, 500},
		{"escaped dollar", cfg.Mapping.File, "cost$.yaml"},
		{"policy", cfg.Sync.Policy, "upsert-only"},
		{"integration identifier", cfg.Port.Integration.Identifier, "backstage-prod"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	secrets := strings.Join(cfg.Secrets(), ",")
	if secrets != "tok-123456,true,s3cret" {
		t.Errorf("secrets %q", secrets)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		body string
		env  map[string]string
		want []string // substrings of the error
	}{
		{"unknown key", "server:\n  token: x\n  lisen: :80\n", nil, []string{"line 3", "unknown key server.lisen"}},
		{"unknown section", "sever:\n  token: x\n", nil, []string{"line 1", "unknown key sever"}},
		{"invalid yaml", "server: [\n", nil, []string{"portbridge.yaml", "yaml"}},
		{"bad type", "server:\n  token: x\n  maxRequestBytes: lots\n", nil, []string{"line 3", "lots"}},
		{"bad duration", "server:\n  token: x\nsync:\n  resyncInterval: soon\n", nil, []string{"line 4", "key sync.resyncInterval must be a duration like 30s or 1h, got \"soon\""}},
		{"missing env var", "server:\n  token: ${NOPE}\n", nil, []string{"line 2", "NOPE is not set"}},
		{"no token", "server:\n  listen: :8080\n", nil, []string{"key server.token", "PORTBRIDGE_SERVER_TOKEN"}},
		{"no auth off loopback", "server:\n  listen: :8080\n  allowNoAuth: true\n", nil, []string{"key server.allowNoAuth", "loopback"}},
		{"bad policy", "server:\n  token: x\nsync:\n  policy: mirror\n", nil, []string{"key sync.policy", "mirror"}},
		{"bad url", "server:\n  token: x\nport:\n  baseUrl: api.port.io\n", nil, []string{"key port.baseUrl"}},
		{"half tls", "server:\n  token: x\n  tls:\n    certFile: a.pem\n", nil, []string{"key server.tls"}},
		{"section not mapping", "server: yes\n", nil, []string{"line 1", "server must be a mapping"}},
		{"bad env override", "server:\n  token: x\n", map[string]string{"PORTBRIDGE_SYNC_WORKERS": "many"}, []string{"PORTBRIDGE_SYNC_WORKERS", "sync.workers", "not an integer"}},
		{"bad integration identifier", "server:\n  token: x\nport:\n  integration:\n    identifier: my integration\n", nil, []string{"key port.integration.identifier", "my integration"}},
		{"bad integration identifier from env", "server:\n  token: x\n", map[string]string{"PORTBRIDGE_PORT_INTEGRATION_IDENTIFIER": "a/b"}, []string{"key port.integration.identifier", "a/b"}},
		{"bad mapping source", "server:\n  token: x\nmapping:\n  source: git\n", nil, []string{"key mapping.source", `"git" is not file or port`}},
		{"port mapping without registration", "server:\n  token: x\nmapping:\n  source: port\nport:\n  integration:\n    register: false\n", nil,
			[]string{"key mapping.source", "port.integration.register: true"}},
		{"poll interval too short", "server:\n  token: x\n", map[string]string{"PORTBRIDGE_PORT_INTEGRATION_POLL_INTERVAL": "10ms"}, []string{"key port.integration.pollInterval", "at least 1s"}},
		{"several problems at once", "server:\n  token: x\nsync:\n  workers: 0\nlog:\n  level: loud\n", nil, []string{"sync.workers", "log.level"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := write(t, c.body)
			_, err := Load(p, env(c.env))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := Load("/nonexistent/portbridge.yaml", env(nil)); err == nil || !strings.Contains(err.Error(), "/nonexistent/portbridge.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	t.Parallel()
	p := write(t, "server:\n  token: supersecret-token\n  listen: ''\n")
	_, err := Load(p, env(nil))
	if err == nil || strings.Contains(err.Error(), "supersecret") {
		t.Fatalf("error %v", err)
	}
}

func TestEnvOnlyAndFields(t *testing.T) {
	t.Parallel()
	cfg, err := Load("", env(map[string]string{"PORTBRIDGE_SERVER_TOKEN": "t", "PORTBRIDGE_SERVER_ALLOW_NO_AUTH": "true",
		"PORTBRIDGE_PORT_CLIENT_ID": "id", "PORTBRIDGE_PORT_CLIENT_SECRET": "secret"}))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Server.AllowNoAuth {
		t.Error("bool override not applied")
	}
	if cfg.Port.Integration.Identifier != "portbridge" {
		t.Errorf("default integration identifier %q", cfg.Port.Integration.Identifier)
	}
	seen := map[string]bool{}
	for _, f := range Fields(cfg) {
		if seen[f.Env] {
			t.Errorf("duplicate env name %s", f.Env)
		}
		seen[f.Env] = true
		if f.Desc == "" {
			t.Errorf("key %s has no description", f.Key)
		}
	}
	if in := cfg.Port.Integration; !in.Register || in.PollInterval.D() != time.Minute || !in.SendRawDataExamples || in.Title == "" || cfg.Mapping.Source != "file" {
		t.Errorf("integration defaults %+v, mapping source %q", in, cfg.Mapping.Source)
	}
	for _, want := range []string{"PORTBRIDGE_PORT_CLIENT_SECRET", "PORTBRIDGE_SERVER_TLS_CERT_FILE", "PORTBRIDGE_MAPPING_INITIALIZE_PORT_RESOURCES", "PORTBRIDGE_PORT_INTEGRATION_IDENTIFIER",
		"PORTBRIDGE_PORT_INTEGRATION_POLL_INTERVAL", "PORTBRIDGE_PORT_INTEGRATION_SEND_RAW_DATA_EXAMPLES", "PORTBRIDGE_PORT_INTEGRATION_REGISTER", "PORTBRIDGE_MAPPING_SOURCE"} {
		if !seen[want] {
			t.Errorf("no field for %s", want)
		}
	}
}

// yamlAt writes value at a dotted key ("port.clientSecret") as YAML.
func yamlAt(key, value string) string {
	parts := strings.Split(key, ".")
	var b strings.Builder
	for i, p := range parts {
		b.WriteString(strings.Repeat("  ", i) + p + ":")
		if i < len(parts)-1 {
			b.WriteString("\n")
		}
	}
	return b.String() + " " + value + "\n"
}

// Issue 13: a YAML type error echoed a secret value. No error shows the
// value of a secret key, whatever is wrong with it, nor a value reached
// through an alias or a ${VAR}.
func TestSecretsNeverInTypeErrors(t *testing.T) {
	t.Parallel()
	def := Default()
	const secret = "s3cret-VALUE-42"
	for _, f := range Fields(&def) {
		if !f.Secret {
			continue
		}
		for _, v := range []string{"!!int " + secret, "!!float " + secret, "!!bool " + secret, "!!timestamp " + secret, "!!binary " + secret,
			"[" + secret + "]", "{a: " + secret + "}", "&s " + secret + "\nsync:\n  workers: *s", "&s " + secret + "\nsync:\n  flushInterval: *s"} {
			// The subtest's name is in its temporary directory: no secret in it.
			t.Run(f.Key+" "+strings.ReplaceAll(v, secret, "SECRET"), func(t *testing.T) {
				t.Parallel()
				body := yamlAt(f.Key, v)
				if f.Key != "server.token" {
					body += "server:\n  token: tok-123456\n"
				}
				_, err := Load(write(t, body), env(nil))
				if err == nil {
					t.Fatalf("no error for\n%s", body)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("error shows the secret: %v", err)
				}
			})
		}
	}
	// A secret substituted into a key of another type.
	_, err := Load(write(t, "server:\n  token: t\n  maxRequestBytes: ${TOKEN}\n"), env(map[string]string{"TOKEN": secret}))
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "server.maxRequestBytes") {
		t.Fatalf("substituted: %v", err)
	}
}

func TestCredentials(t *testing.T) {
	t.Parallel()
	base := "port:\n  clientId: id\n  clientSecret: sec\n"
	tests := []struct{ name, body, want string }{
		{"token with a newline", "server:\n  token: \"tok-123\\n\"\n" + base, "key server.token: has leading or trailing whitespace"},
		{"token with spaces", "server:\n  token: \" tok-123\"\n" + base, "key server.token: has leading or trailing whitespace"},
		{"catalog token with a space inside", "server:\n  token: t\nbackstage:\n  token: \"a b\"\n" + base, "key backstage.token: contains whitespace"},
		{"client secret with a newline", "server:\n  token: t\nport:\n  clientId: id\n  clientSecret: \"sec\\n\"\n", "key port.clientSecret: has leading or trailing whitespace"},
		{"only a client id", "server:\n  token: t\nport:\n  clientId: id\n", "key port.clientSecret: must be set"},
		{"URL with user info", "server:\n  token: t\nbackstage:\n  baseUrl: \"https://user:pa55word@backstage?x=1\"\n" + base, "must not have a query"},
		{"long value", "server:\n  token: t\nlog:\n  level: " + strings.Repeat("v", 1<<20) + "\n" + base, "key log.level: \"vvvv"},
		{"limit over its ceiling", "server:\n  token: t\nlimits:\n  maxDepth: 5000\n" + base, "key limits.maxDepth: must be at most 1000"},
		{"budget too small", "server:\n  token: t\nmapping:\n  memoryBudget: 1000\n" + base, "key mapping.memoryBudget"},
		{"retry-after cap zero", "server:\n  token: t\nport:\n  clientId: id\n  clientSecret: sec\n  maxRetryAfter: 0s\n", "key port.maxRetryAfter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(write(t, tt.body), env(nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "pa55word") || len(err.Error()) > 2000 {
				t.Fatalf("error shows too much: %.300s", err)
			}
		})
	}
}

// Every input limit has its config key.
func TestLimitKeys(t *testing.T) {
	t.Parallel()
	def := Default()
	keys := map[string]bool{}
	for _, f := range Fields(&def) {
		keys[f.Key] = true
	}
	for _, k := range []string{limits.KeyMaxDepth, limits.KeyMaxEntityBytes, limits.KeyMaxStringBytes, limits.KeyMaxMetadataFieldBytes,
		limits.KeyMaxChangesPerBatch, limits.KeyMaxSourceBytes, limits.KeyMaxReasonBytes, limits.KeyMaxRefBytes, limits.KeyMaxMappingYAMLBytes} {
		if !keys[k] {
			t.Errorf("no config key %s", k)
		}
	}
	if def.Limits.Bounds() != limits.Default() {
		t.Errorf("default limits %+v, want %+v", def.Limits.Bounds(), limits.Default())
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{"127.0.0.1:80": true, "[::1]:80": true, "localhost:1": true, ":8080": false, "0.0.0.0:80": false, "10.0.0.1:80": false, "junk": false} {
		if IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%q) != %v", addr, want)
		}
	}
}

// Missing Port credentials are a config error for the commands that write
// to Port (CheckCredentials), not for loading a config.
func TestCheckCredentials(t *testing.T) {
	t.Parallel()
	cfg, err := Load(write(t, "server:\n  token: t\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckCredentials(); err == nil || !strings.Contains(err.Error(), "key port.clientId: port.clientId and port.clientSecret must be set") {
		t.Fatalf("no credentials: %v", err)
	}
	cfg.Port.ClientID, cfg.Port.ClientSecret = "id", "sec"
	if err := cfg.CheckCredentials(); err != nil {
		t.Fatal(err)
	}
}
