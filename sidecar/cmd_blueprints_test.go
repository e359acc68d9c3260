package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
	"github.com/portbridge/portbridge/sidecar/suggest"
)

const exampleAll = "../testdata/backstage-examples/all.yaml"

func suggestJSON(t *testing.T, args ...string) (suggestReport, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"blueprints", "suggest", "--output", "json"}, args...), &out, &errb)
	var rep suggestReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON (exit %d): %v\n%s\n%s", code, err, out.String(), errb.String())
	}
	return rep, errb.String(), code
}

func changeOf(rep suggestReport, bp, path string) *suggest.Change {
	for _, b := range rep.Plan {
		if b.Identifier != bp {
			continue
		}
		for i, c := range b.Changes {
			if c.Path == path {
				return &b.Changes[i]
			}
		}
	}
	return nil
}

// On the example catalog, without Port: the spec.type values seen become
// enum proposals, which --apply would not make (a new enum narrows).
func TestBlueprintsSuggestExamples(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, "")
	rep, _, code := suggestJSON(t, "--config", cfg, "--entities", exampleAll)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if rep.Blueprints.Source != "defaults" || rep.Catalog.Source != "file" || rep.Catalog.Entities != 36 {
		t.Errorf("blueprints %+v catalog %+v", rep.Blueprints, rep.Catalog)
	}
	for bp, want := range map[string][]any{
		"component": {"library", "service", "website"},
		"api":       {"asyncapi", "graphql", "grpc", "openapi", "trpc"},
		"resource":  {"database"},
	} {
		ch := changeOf(rep, bp, "schema.properties.type.enum")
		if ch == nil || ch.Kind != "enum" || ch.Applies || !reflect.DeepEqual(ch.Value, want) {
			t.Errorf("%s type enum: %+v, want the new enum %v, not applied", bp, ch, want)
		}
	}
	if ch := changeOf(rep, "component", "schema.properties.lifecycle.enum"); ch == nil || !reflect.DeepEqual(ch.Value, []any{"experimental", "production"}) {
		t.Errorf("component lifecycle enum: %+v", ch)
	}
	if ch := changeOf(rep, "component", "schema.properties.buildkitePipeline"); ch == nil || ch.Kind != "unused-property" || ch.Applies {
		t.Errorf("always-empty property: %+v", ch)
	}
	if ch := changeOf(rep, "api", "schema.properties.definitionGRPC.enum"); ch != nil {
		t.Errorf("an enum proposed for API definitions: %+v", ch)
	}
	// The readable form is a diff.
	var out, errb bytes.Buffer
	run(context.Background(), []string{"blueprints", "suggest", "--config", cfg, "--entities", exampleAll}, &out, &errb)
	for _, w := range []string{"--- blueprint component (now)", "@@ schema.properties.type.enum (enum, proposal, not applied by --apply)", `+ ["library","service","website"]`} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("text output lacks %q:\n%s", w, out.String())
		}
	}
}

// Against the Port emulator: the proposals are computed from Port's
// blueprints, nothing changes without --apply, and --apply only adds.
func TestBlueprintsSuggestApply(t *testing.T) {
	t.Parallel()
	emu := porttest.New(porttest.Options{})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	pc, err := port.New(port.Config{BaseURL: srv.URL, ClientID: porttest.DefaultClientID, ClientSecret: porttest.DefaultClientSecret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mapping.EnsureBlueprints(context.Background(), pc, mapping.DefaultBlueprints()); err != nil {
		t.Fatal(err)
	}
	// Port's component differs from the default: type has an enum that
	// lacks values the catalog uses, tags and providesApis are missing.
	comp, _ := emu.Blueprint("component")
	tp := comp.Schema.Properties["type"]
	tp.Enum = []any{"service"}
	comp.Schema.Properties["type"] = tp
	delete(comp.Schema.Properties, "tags")
	delete(comp.Relations, "providesApis")
	if err := emu.PutBlueprint(comp); err != nil {
		t.Fatal(err)
	}
	snapshot := func() map[string]port.Blueprint {
		out := map[string]port.Blueprint{}
		for _, id := range []string{"component", "api", "resource", "system", "domain", "group", "user", "location", "template", "backstageEntity"} {
			b, _ := emu.Blueprint(id)
			out[id] = b
		}
		return out
	}
	before := snapshot()
	cfg := writeConfig(t, fmt.Sprintf("port: {baseUrl: %q, clientId: %s, clientSecret: %s}\n", srv.URL, porttest.DefaultClientID, porttest.DefaultClientSecret))

	rep, _, code := suggestJSON(t, "--config", cfg, "--entities", exampleAll)
	if code != 0 || rep.Blueprints.Source != "port" {
		t.Fatalf("exit %d, blueprints %+v", code, rep.Blueprints)
	}
	if ch := changeOf(rep, "component", "schema.properties.type.enum"); ch == nil || ch.Kind != "enum-values" || !ch.Applies || !reflect.DeepEqual(ch.Value, []any{"library", "website"}) {
		t.Errorf("type enum values: %+v", ch)
	}
	if ch := changeOf(rep, "component", "schema.properties.tags"); ch == nil || ch.Kind != "property" || !ch.Applies {
		t.Errorf("tags property: %+v", ch)
	}
	if ch := changeOf(rep, "component", "relations.providesApis"); ch == nil || !ch.Applies ||
		!reflect.DeepEqual(ch.Value, map[string]any{"title": "Provides Apis", "target": "api", "required": false, "many": true}) {
		t.Errorf("providesApis relation: %+v", ch)
	}
	if !reflect.DeepEqual(snapshot(), before) {
		t.Fatal("blueprints changed without --apply")
	}

	rep, stderr, code := suggestJSON(t, "--config", cfg, "--entities", exampleAll, "--apply")
	if code != 0 {
		t.Fatalf("--apply: exit %d: %s", code, stderr)
	}
	after := snapshot()
	for id, b := range before {
		if err := suggest.Superset(b, after[id]); err != nil {
			t.Errorf("blueprint %s lost something: %v", id, err)
		}
	}
	c := after["component"]
	if got := c.Schema.Properties["type"].Enum; !slices.Equal(got, []any{"service", "library", "website"}) {
		t.Errorf("type enum after --apply: %v", got)
	}
	if _, ok := c.Schema.Properties["tags"]; !ok {
		t.Error("tags not added")
	}
	if r, ok := c.Relations["providesApis"]; !ok || r.Target != "api" || !r.Many {
		t.Errorf("providesApis after --apply: %+v", r)
	}
	if e := c.Schema.Properties["lifecycle"].Enum; len(e) != 0 {
		t.Errorf("a new enum was applied (it narrows): %v", e)
	}
	if _, ok := c.Schema.Properties["buildkitePipeline"]; !ok {
		t.Error("an always-empty property was removed")
	}
	if len(rep.Applied) != 1 || rep.Applied[0].Blueprint != "component" || rep.Applied[0].Changes != 3 {
		t.Errorf("applied %+v", rep.Applied)
	}
	// A second run finds nothing more to add.
	rep, _, _ = suggestJSON(t, "--config", cfg, "--entities", exampleAll, "--apply")
	for _, b := range rep.Plan {
		for _, ch := range b.Changes {
			if ch.Applies {
				t.Errorf("still applies after --apply: %+v", ch)
			}
		}
	}
}

// --apply needs Port; an unreachable one fails fast.
func TestBlueprintsSuggestApplyNeedsPort(t *testing.T) {
	t.Parallel()
	closed := closedURL(t)
	cfg := writeConfig(t, fmt.Sprintf("port: {baseUrl: %q, clientId: a, clientSecret: b}\n", closed))
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"blueprints", "suggest", "--config", cfg, "--entities", exampleAll, "--apply"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "--apply needs Port: Port at "+closed+": connection refused") {
		t.Errorf("exit %d: %s", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	code = run(context.Background(), []string{"blueprints", "suggest", "--config", writeConfig(t, fmt.Sprintf("backstage: {baseUrl: %q}\n", closed))}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "reading the catalog: Backstage at "+closed) || !strings.Contains(errb.String(), "--entities FILE") {
		t.Errorf("no catalog: exit %d: %s", code, errb.String())
	}
}
