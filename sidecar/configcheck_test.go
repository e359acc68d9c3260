package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/mapcheck"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

const olderMapping = "testdata/older-port-app-config.yaml"

// lineOf returns the 1-based line and column of the first occurrence of
// text in file.
func lineOf(t *testing.T, file, text string) (int, int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(b), text)
	if i < 0 {
		t.Fatalf("%s has no %q", file, text)
	}
	return strings.Count(string(b[:i]), "\n") + 1, i - strings.LastIndex(string(b[:i]), "\n")
}

// checkJSON runs `config check --format json` in-process and decodes the
// report.
func checkJSON(t *testing.T, args ...string) (checkReport, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"config", "check", "--format", "json"}, args...), &out, &errb)
	var rep checkReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s\n%s", err, out.String(), errb.String())
	}
	return rep, code
}

func findProblem(rep checkReport, sev mapcheck.Severity, key, text string) *mapcheck.Problem {
	for i, p := range rep.Problems {
		if p.Severity == sev && strings.Contains(p.Key, key) && strings.Contains(p.Message, text) {
			return &rep.Problems[i]
		}
	}
	return nil
}

// writeConfig writes a config with a server token, and Port credentials
// unless body configures Port itself (serve needs both).
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	if !strings.Contains(body, "port:") {
		body = "port: {clientId: test-id, clientSecret: test-secret}\n" + body
	}
	return writeTemp(t, "portbridge.yaml", "server:\n  token: t0ken-123\n"+body)
}

// The older-mapping case of issue 17: identifier .metadata.name and a
// property `name` that the blueprint lacks. Port would answer 422 at push;
// config check says so at the property's line and column.
func TestConfigCheckOlderMapping(t *testing.T) {
	t.Parallel()
	abs, _ := filepath.Abs(olderMapping)
	cfg := writeConfig(t, "mapping:\n  file: "+abs+"\n")
	rep, code := checkJSON(t, "--offline", "--config", cfg)
	if code != 1 || rep.Valid {
		t.Fatalf("exit %d valid %v, want 1 and invalid: %+v", code, rep.Valid, rep)
	}
	line, col := lineOf(t, olderMapping, "            name: .metadata.name")
	p := findProblem(rep, mapcheck.Error, "resources[1] (kind component) properties.name", `blueprint "component" has no property "name"`)
	if p == nil {
		t.Fatalf("no error for the name property: %+v", rep.Problems)
	}
	if p.File != abs || p.Line != line || p.Column != col+12 {
		t.Errorf("at %s:%d:%d, want %s:%d:%d", p.File, p.Line, p.Column, abs, line, col+12)
	}
	idLine, idCol := lineOf(t, olderMapping, ".metadata.name\n          title: .metadata.title\n")
	if w := findProblem(rep, mapcheck.Warning, "resources[1] (kind component) identifier", "does not change with metadata.namespace"); w == nil || w.Line != idLine || w.Column != idCol {
		t.Errorf("identifier warning %+v, want at %d:%d", w, idLine, idCol)
	}
	if w := findProblem(rep, mapcheck.Warning, "relations.system", `targets no entity of blueprint "system"`); w == nil || w.Count == 0 {
		t.Errorf("no dangling relation warning: %+v", rep.Problems)
	}
	if rep.Blueprints.Source != "defaults" || rep.Sample.Source != "examples" || rep.Sample.Entities < 50 {
		t.Errorf("blueprints %+v sample %+v, want the defaults and the example catalog", rep.Blueprints, rep.Sample)
	}
	// The text form prints file:line:column first, like a compiler.
	var out, errb bytes.Buffer
	run(context.Background(), []string{"config", "check", "--offline", "--config", cfg}, &out, &errb)
	if want := fmt.Sprintf("%s:%d:%d: error: resources[1] (kind component) properties.name:", abs, line, col+12); !strings.Contains(out.String(), want) {
		t.Errorf("text report lacks %q:\n%s", want, out.String())
	}
}

// With Port reachable, its blueprints are the ones checked against (plus
// the configured ones it lacks, which will be created at start), and a
// reachable Backstage is the sample.
func TestConfigCheckAgainstPortAndCatalog(t *testing.T) {
	t.Parallel()
	emu := porttest.New(porttest.Options{})
	portSrv := httptest.NewServer(emu)
	t.Cleanup(portSrv.Close)
	// Port's component blueprint: has a `name` property, a lifecycle enum
	// and a numeric `score`, and no `system` relation.
	comp := port.Blueprint{Identifier: "component", Title: "Component", Schema: port.BlueprintSchema{Properties: map[string]port.Property{
		"name":      {Type: "string"},
		"type":      {Type: "string"},
		"lifecycle": {Type: "string", Enum: []any{"production", "experimental"}},
		"score":     {Type: "number"},
		"tags":      {Type: "array", Items: map[string]any{"type": "string"}},
	}}}
	if err := emu.PutBlueprint(comp); err != nil {
		t.Fatal(err)
	}
	cat := catalogtest.New(catalogtest.Options{Token: "catalog-token-123"})
	if err := cat.Upsert(
		map[string]any{"apiVersion": "backstage.io/v1alpha1", "kind": "Component", "metadata": map[string]any{"name": "a", "title": "Service A"},
			"spec": map[string]any{"type": "service", "lifecycle": "production", "owner": "team-a"}},
		map[string]any{"apiVersion": "backstage.io/v1alpha1", "kind": "Component", "metadata": map[string]any{"name": "b", "title": "B"},
			"spec": map[string]any{"type": "service", "lifecycle": "deprecated", "owner": "team-a"}},
		map[string]any{"apiVersion": "backstage.io/v1alpha1", "kind": "Component", "metadata": map[string]any{"name": "c", "title": "C"},
			"spec": map[string]any{"type": "library", "lifecycle": "deprecated", "owner": "team-a"}},
	); err != nil {
		t.Fatal(err)
	}
	catSrv := httptest.NewServer(cat)
	t.Cleanup(catSrv.Close)
	mappingFile := writeTemp(t, "m.yaml", `resources:
  - kind: component
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .metadata.identifier
          title: .metadata.title
          blueprint: '"component"'
          properties:
            name: .metadata.name
            lifecycle: .spec.lifecycle
            score: .spec.type
            tags: .metadata.tags
          relations:
            system: .spec.system
  - kind: group
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .metadata.title
          blueprint: '"team"'
`)
	cfg := writeConfig(t, fmt.Sprintf("backstage: {baseUrl: %q, token: catalog-token-123}\nport: {baseUrl: %q, clientId: %s, clientSecret: %s}\nmapping:\n  file: %s\n  initializePortResources: false\n",
		catSrv.URL, portSrv.URL, porttest.DefaultClientID, porttest.DefaultClientSecret, mappingFile))
	rep, code := checkJSON(t, "--config", cfg)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	if rep.Blueprints.Source != "port" || !strings.Contains(rep.Blueprints.Detail, portSrv.URL) || rep.Sample.Source != "catalog" || rep.Sample.Entities != 3 {
		t.Fatalf("blueprints %+v sample %+v, want Port's and the live catalog", rep.Blueprints, rep.Sample)
	}
	at := func(text string) (int, int) { return lineOf(t, mappingFile, text) }
	for _, tc := range []struct {
		sev       mapcheck.Severity
		key, text string
		pos       string // text whose position the problem must have
	}{
		{mapcheck.Error, "properties.lifecycle", `"deprecated" is not one of its enum values [production, experimental] (2 of 3 sample entities, e.g. component:default/`, ".spec.lifecycle"},
		{mapcheck.Error, "properties.score", "the property is of type number, the value is the string \"", ".spec.type"},
		{mapcheck.Error, "relations.system", `blueprint "component" has no relation "system"`, "system: .spec.system"},
		{mapcheck.Error, "resources[1] (kind group) blueprint", `blueprint "team" does not exist in Port at ` + portSrv.URL, `'"team"'`},
	} {
		p := findProblem(rep, tc.sev, tc.key, tc.text)
		if p == nil {
			t.Errorf("no %s %s %q among:\n%v", tc.sev, tc.key, tc.text, rep.Problems)
			continue
		}
		if l, c := at(tc.pos); p.Line != l || p.Column != c {
			t.Errorf("%s at %d:%d, want %d:%d", tc.key, p.Line, p.Column, l, c)
		}
	}
	// Port's component has `name`: no error for it, unlike the defaults.
	if p := findProblem(rep, mapcheck.Error, "properties.name", ""); p != nil {
		t.Errorf("properties.name reported against Port's blueprint that has it: %+v", p)
	}
	// The title is free text: an identifier made of it can break Port's rule.
	if p := findProblem(rep, mapcheck.Warning, "resources[1] (kind group) identifier", "depends on metadata.title"); p == nil {
		t.Errorf("no identifier probe warning: %v", rep.Problems)
	}
}

// Port refusing the credentials is an error of the config; Port being
// unreachable is a warning, and the check falls back on the configured
// blueprints and says so.
func TestConfigCheckPeers(t *testing.T) {
	t.Parallel()
	emu := httptest.NewServer(porttest.New(porttest.Options{}))
	t.Cleanup(emu.Close)
	closed := closedURL(t)
	cfg401 := writeConfig(t, fmt.Sprintf("backstage: {baseUrl: %q}\nport: {baseUrl: %q, clientId: %s, clientSecret: wrong}\n", closed, emu.URL, porttest.DefaultClientID))
	rep, code := checkJSON(t, "--config", cfg401)
	if code != 1 || findProblem(rep, mapcheck.Error, "port.clientId, port.clientSecret", "answered 401") == nil {
		t.Errorf("401: exit %d, problems %v", code, rep.Problems)
	}
	if rep.Blueprints.Source != "defaults" || !strings.Contains(rep.Blueprints.Note, "Port not usable") {
		t.Errorf("401: blueprints %+v", rep.Blueprints)
	}
	cfgDown := writeConfig(t, fmt.Sprintf("backstage: {baseUrl: %q}\nport: {baseUrl: %q, clientId: a, clientSecret: b}\n", closed, closed))
	rep, code = checkJSON(t, "--config", cfgDown)
	if code != 0 || findProblem(rep, mapcheck.Warning, "port.baseUrl", "Port at "+closed+": connection refused") == nil ||
		findProblem(rep, mapcheck.Warning, "backstage.baseUrl", "Backstage at "+closed+": connection refused") == nil {
		t.Errorf("unreachable: exit %d, problems %v", code, rep.Problems)
	}
	if !strings.Contains(rep.Blueprints.Note, "Port not usable: connection refused") || rep.Sample.Source != "examples" {
		t.Errorf("unreachable: blueprints %+v sample %+v", rep.Blueprints, rep.Sample)
	}
	if _, code = checkJSON(t, "--strict", "--config", cfgDown); code != 1 {
		t.Errorf("--strict with warnings: exit %d", code)
	}
}

// Every problem of a broken mapping is reported, YAML and jq errors at
// their own line and column, and the static checks still run.
func TestConfigCheckReportsEverything(t *testing.T) {
	t.Parallel()
	mappingFile := writeTemp(t, "m.yaml", `resources:
  - kind: component
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .metadata.identifier
          blueprint: '"component"'
          properties:
            type: .spec.type
            colour: .spec.colour
  - kind: api
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .metadata.identifier
          blueprint: '"api"'
          properties:
            type: |
              .spec.type
                | ascii_downcase )
`)
	cfg := writeConfig(t, "mapping:\n  file: "+mappingFile+"\n")
	rep, code := checkJSON(t, "--offline", "--config", cfg)
	if code != 1 || rep.Errors != 2 {
		t.Fatalf("exit %d, %d errors, want 1 and 2: %v", code, rep.Errors, rep.Problems)
	}
	l, c := lineOf(t, mappingFile, "colour:")
	if p := findProblem(rep, mapcheck.Error, "properties.colour", `no property "colour"`); p == nil || p.Line != l || p.Column != c {
		t.Errorf("colour: %+v, want at %d:%d", p, l, c)
	}
	l, c = lineOf(t, mappingFile, ")")
	if p := findProblem(rep, mapcheck.Error, "resources[1] (kind api) properties.type", "jq syntax error"); p == nil || p.Line != l || p.Column != c {
		t.Errorf("jq error: %+v, want at %d:%d", p, l, c)
	}
	// A YAML syntax error deep in the file.
	broken := writeTemp(t, "broken.yaml", strings.Replace(string(must(os.ReadFile(olderMapping))), "            lifecycle: .spec.lifecycle\n            description", "            lifecycle: [.spec.lifecycle\n            description", 1))
	rep, _ = checkJSON(t, "--offline", "--config", writeConfig(t, "mapping:\n  file: "+broken+"\n"))
	l, _ = lineOf(t, broken, "lifecycle: [")
	if len(rep.Problems) != 1 || rep.Problems[0].Line != l || !strings.Contains(rep.Problems[0].Message, "invalid YAML") {
		t.Errorf("YAML error: %+v, want one at line %d", rep.Problems, l)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// config check against an unreachable Port, with the real binary: a
// warning within seconds, not a two-minute hang.
func TestConfigCheckUnreachableBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	closed := closedURL(t)
	cfg := writeConfig(t, fmt.Sprintf("backstage: {baseUrl: %q}\nport: {baseUrl: %q, clientId: a, clientSecret: b}\n", closed, closed))
	out, code := runBinary(t, 10*time.Second, "config", "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "warning: port.baseUrl: Port at "+closed+": connection refused") ||
		!strings.Contains(out, "blueprints: the embedded default blueprints (Port not usable: connection refused") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	if !slices.Contains(strings.Split(strings.TrimSpace(out), "\n"), fmt.Sprintf("config %s is valid: 10 mapping resources, 10 blueprints, policy sync, 3 warnings", cfg)) {
		t.Errorf("summary:\n%s", out)
	}
}
