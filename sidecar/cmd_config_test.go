package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	badMapping := write("bad-mapping.yaml", "resources:\n  - kind: component\n    selector:\n      query: '.spec.type | | x'\n    port:\n      entity:\n        mappings:\n          identifier: .metadata.name\n          blueprint: '\"component\"'\n")
	cases := []struct {
		name, body string
		code       int
		want       string
	}{
		{"valid", "server:\n  token: t0ken-123\n", 0, "is valid: 10 mapping resources"},
		{"unknown key", "server:\n  token: t\n  tokn: x\n", 1, ".yaml:3: error: unknown key server.tokn"},
		{"bad mapping file", "server:\n  token: t\nmapping:\n  file: " + badMapping + "\n", 1, "jq syntax error"},
		{"missing mapping file", "server:\n  token: t\nmapping:\n  file: /nonexistent.yaml\n", 1, "key mapping.file"},
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
