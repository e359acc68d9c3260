package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// mapInput is three components and an API, in Backstage's descriptor YAML.
const mapInput = `apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: alpha, description: "first: with a colon"}
spec: {type: service, lifecycle: production, owner: team-a}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: beta, tags: [go]}
spec: {type: website, lifecycle: experimental, owner: team-b}
---
apiVersion: backstage.io/v1alpha1
kind: API
metadata: {name: gamma}
spec: {type: openapi, lifecycle: production, owner: team-a, definition: "openapi: 3.0.0"}
`

// brokenEntity fails to map: it has no metadata.name.
const brokenEntity = "---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {title: nameless}\nspec: {type: service}\n"

func writeTemp(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMapOutputFormats(t *testing.T) {
	t.Parallel()
	in := writeTemp(t, "entities.yaml", mapInput)
	decode := map[string]func(t *testing.T, out string) []map[string]any{
		"ndjson": func(t *testing.T, out string) []map[string]any {
			var got []map[string]any
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var e map[string]any
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("line %q is not a JSON object: %v", line, err)
				}
				got = append(got, e)
			}
			return got
		},
		"json": func(t *testing.T, out string) []map[string]any {
			var got []map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("not a JSON array: %v\n%s", err, out)
			}
			return got
		},
		"yaml": func(t *testing.T, out string) []map[string]any {
			var got []map[string]any
			dec := yaml.NewDecoder(strings.NewReader(out))
			for {
				var e map[string]any
				if err := dec.Decode(&e); err != nil {
					if err.Error() == "EOF" {
						return got
					}
					t.Fatalf("not YAML documents: %v\n%s", err, out)
				}
				got = append(got, e)
			}
		},
	}
	for format, dec := range decode {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			if code := run(context.Background(), []string{"map", "--entities", in, "--output", format}, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			got := dec(t, out.String())
			if len(got) != 3 {
				t.Fatalf("%d entities, want 3:\n%s", len(got), out.String())
			}
			ids := []string{}
			for _, e := range got {
				ids = append(ids, e["blueprint"].(string)+" "+e["identifier"].(string))
			}
			if want := "component component:default/alpha,component component:default/beta,api api:default/gamma"; strings.Join(ids, ",") != want {
				t.Errorf("entities %v, want %s", ids, want)
			}
			if d := got[0]["properties"].(map[string]any)["description"]; d != "first: with a colon" {
				t.Errorf("description %v", d)
			}
			if strings.Contains(out.String(), "# 3 input") || !strings.Contains(errb.String(), "# 3 input entities -> 3 Port entities, 0 field warnings, 0 failed to map") {
				t.Errorf("summary must be on stderr only; stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
			}
		})
	}
}

func TestMapFailures(t *testing.T) {
	t.Parallel()
	// The broken entity sits second: without --keep-going the first is
	// printed and the third is not.
	parts := strings.SplitN(mapInput, "---\n", 2)
	in := writeTemp(t, "entities.yaml", parts[0]+brokenEntity+"---\n"+parts[1])
	for _, tc := range []struct {
		name      string
		args      []string
		wantIDs   int
		wantInErr []string
	}{
		{"stops at the first failure", nil, 1, []string{"failed: #2 Component", "has no metadata.name", "stopped at the first failure"}},
		{"keep going", []string{"--keep-going"}, 3, []string{"failed: #2 Component", "1 of 4 entities failed to map"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			code := run(context.Background(), append([]string{"map", "--entities", in, "--output", "ndjson"}, tc.args...), &out, &errb)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr %s", code, errb.String())
			}
			if n := strings.Count(out.String(), "\n"); n != tc.wantIDs {
				t.Errorf("%d entities on stdout, want %d:\n%s", n, tc.wantIDs, out.String())
			}
			for _, w := range tc.wantInErr {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errb.String())
				}
			}
		})
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"map", "--entities", in, "--output", "table"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), `"table" is not one of yaml, json, ndjson`) {
		t.Errorf("bad --output: exit %d, %s", code, errb.String())
	}
	// A field warning is not a failure.
	warn := writeTemp(t, "warn.yaml", "resources:\n  - kind: component\n    selector: {query: 'true'}\n    port:\n      entity:\n        mappings:\n          identifier: .metadata.name\n          blueprint: '\"component\"'\n          properties:\n            n: .spec.type | tonumber\n")
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"map", "--config", warn, "--entities", writeTemp(t, "e.yaml", parts[0]), "--output", "ndjson"}, &out, &errb); code != 0 ||
		!strings.Contains(errb.String(), "warning: #1 Component:default/alpha: resources[0] (kind component) properties.n:") {
		t.Errorf("field warning: exit %d, stderr %s", code, errb.String())
	}
}

// The real binary in a shell pipeline into the jq CLI, as the README shows.
func TestMapPipesIntoJQ(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs jq")
	}
	t.Parallel()
	if _, err := exec.LookPath("jq"); err != nil {
		t.Fatal("the jq CLI is needed (CI installs it): ", err)
	}
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	in := writeTemp(t, "entities.yaml", mapInput)
	cmd := exec.Command("bash", "-c", `set -o pipefail; "$0" map --entities "$1" --output ndjson | jq -c '{blueprint, identifier}'`, bin, in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pipeline: %v\n%s", err, stderr.String())
	}
	want := `{"blueprint":"component","identifier":"component:default/alpha"}
{"blueprint":"component","identifier":"component:default/beta"}
{"blueprint":"api","identifier":"api:default/gamma"}
`
	if stdout.String() != want {
		t.Errorf("jq output:\n%s\nwant:\n%s", stdout.String(), want)
	}
	if !strings.Contains(stderr.String(), "# 3 input entities") {
		t.Errorf("summary missing from stderr: %s", stderr.String())
	}
}
