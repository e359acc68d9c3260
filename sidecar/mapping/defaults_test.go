package mapping

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/portbridge/portbridge/sidecar/port"
)

func oceanConfig(t testing.TB) (*Config, []port.Blueprint) {
	t.Helper()
	data, err := os.ReadFile("testdata/ocean-port-app-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(data, "testdata/ocean-port-app-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("testdata/ocean-blueprints.json")
	if err != nil {
		t.Fatal(err)
	}
	var bps []port.Blueprint
	if err := json.Unmarshal(raw, &bps); err != nil {
		t.Fatal(err)
	}
	return cfg, bps
}

// relationTargets lists the stitched relation targets of type typ whose
// kind is kind.
func relationTargets(e map[string]any, typ, kind string) []any {
	out := []any{}
	for _, r := range e["relations"].([]any) {
		r := r.(map[string]any)
		if r["type"] == typ && strings.HasPrefix(r["targetRef"].(string), kind+":") {
			out = append(out, r["targetRef"])
		}
	}
	return out
}

func TestDefaultMappingOnExampleCatalog(t *testing.T) {
	t.Parallel()
	m, err := New(DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	catalog := exampleCatalog(t)
	manyChecks := map[string][]struct{ relation, typ, kind string }{
		"component": {{"providesApis", "providesApi", "api"}, {"consumesApis", "consumesApi", "api"},
			{"dependsOnComponent", "dependsOn", "component"}, {"dependsOnResource", "dependsOn", "resource"}},
		"resource": {{"dependsOnComponent", "dependsOn", "component"}, {"dependsOnResource", "dependsOn", "resource"}},
		"group":    {{"members", "hasMember", "user"}},
	}
	counted := map[string]int{}
	for _, e := range catalog {
		r := m.Map(context.Background(), e)
		if len(r.Skipped) > 0 || len(r.Warnings) > 0 {
			t.Errorf("%s: skipped %+v warnings %+v", refOf(e), r.Skipped, r.Warnings)
		}
		if len(r.Entities) != 1 {
			t.Fatalf("%s mapped to %d entities", refOf(e), len(r.Entities))
		}
		x := r.Entities[0]
		if x.Identifier != refOf(e) {
			t.Errorf("identifier %q, want %q", x.Identifier, refOf(e))
		}
		if err := ValidIdentifier(x.Identifier); err != nil {
			t.Error(err)
		}
		for name, v := range x.Entity.Relations {
			vals, ok := v.([]any)
			if !ok {
				vals = []any{v}
			}
			for _, target := range vals {
				if s, _ := target.(string); strings.HasSuffix(s, "/") || (target != nil && ValidIdentifier(s) != nil) {
					t.Errorf("%s relation %s = %q", x.Identifier, name, s)
				}
			}
		}
		for _, c := range manyChecks[x.Blueprint] {
			want := relationTargets(e, c.typ, c.kind)
			if got := x.Entity.Relations[c.relation]; !equalJSON(got, want) {
				t.Errorf("%s %s = %v, want %v", x.Identifier, c.relation, got, want)
			}
			counted[c.relation] += len(want)
		}
		spec, _ := e["spec"].(map[string]any)
		profile, _ := spec["profile"].(map[string]any)
		if email, ok := profile["email"]; ok && x.Entity.Properties["email"] != email {
			t.Errorf("%s email = %v, want %v", x.Identifier, x.Entity.Properties["email"], email)
		}
		if x.Blueprint == "group" && x.Entity.Properties["type"] != spec["type"] {
			t.Errorf("%s type = %v, want %v", x.Identifier, x.Entity.Properties["type"], spec["type"])
		}
		if sys := relationTargets(e, "partOf", "system"); len(sys) == 1 && x.Entity.Relations["system"] != sys[0] {
			t.Errorf("%s system = %v, want %v", x.Identifier, x.Entity.Relations["system"], sys[0])
		}
		switch x.Identifier {
		case "api:default/petstore":
			def, ok := x.Entity.Properties["definitionOpenAPI"].(map[string]any)
			if !ok || def["openapi"] != "3.0.0" {
				t.Errorf("petstore definitionOpenAPI = %T, want the parsed document", x.Entity.Properties["definitionOpenAPI"])
			}
		case "api:default/streetlights":
			if def, ok := x.Entity.Properties["definitionAsyncAPI"].(map[string]any); !ok || def["asyncapi"] != "2.0.0" {
				t.Errorf("streetlights definitionAsyncAPI = %T", x.Entity.Properties["definitionAsyncAPI"])
			}
		case "api:default/hello-world":
			if s, _ := x.Entity.Properties["definitionGRPC"].(string); !strings.Contains(s, "service Greeter") {
				t.Errorf("hello-world definitionGRPC missing")
			}
		case "api:default/backstage-mcp-server":
			if x.Entity.Properties["definition"] != nil {
				t.Errorf("missing definition became %q, want null", x.Entity.Properties["definition"])
			}
		case "domain:default/artists":
			if x.Entity.Relations["subdomainOf"] != "domain:default/audio" {
				t.Errorf("artists subdomainOf = %v", x.Entity.Relations["subdomainOf"])
			}
		case "component:default/petstore":
			links := x.Entity.Properties["links"].([]any)
			if len(links) == 0 || !strings.HasPrefix(links[0].(string), "http") {
				t.Errorf("links = %v, want URLs", links)
			}
		}
	}
	for _, rel := range []string{"providesApis", "consumesApis", "members", "dependsOnResource"} {
		if counted[rel] == 0 {
			t.Errorf("the example catalog exercised no %s relation", rel)
		}
	}
}

func TestDefaultBlueprintsMatchMapping(t *testing.T) {
	t.Parallel()
	bps := newBlueprintIndex(DefaultBlueprints())
	for _, r := range DefaultConfig().Resources {
		bp := bps[constString(normalizeQuotes(r.Mappings.Blueprint))]
		if bp == nil {
			t.Fatalf("resource %s writes to a blueprint that is not a default", r.Kind)
		}
		for p := range r.Mappings.Properties {
			if _, ok := bp.Schema.Properties[p]; !ok {
				t.Errorf("blueprint %s lacks property %s", bp.Identifier, p)
			}
		}
		for rel := range r.Mappings.Relations {
			if _, ok := bp.Relations[rel]; !ok {
				t.Errorf("blueprint %s lacks relation %s", bp.Identifier, rel)
			}
		}
		for rel, def := range bp.Relations {
			if bps[def.Target] == nil {
				t.Errorf("blueprint %s relation %s targets unknown blueprint %s", bp.Identifier, rel, def.Target)
			}
		}
	}
	m, err := New(DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A custom kind goes through the generic resource.
	r := m.Map(context.Background(), map[string]any{"kind": "AiResource", "metadata": map[string]any{"name": "x"}, "spec": map[string]any{"type": "prompt"}})
	if len(r.Entities) != 1 || r.Entities[0].Blueprint != "backstageEntity" || r.Entities[0].Entity.Properties["kind"] != "AiResource" {
		t.Errorf("custom kind: %+v", r)
	}
	if k := m.Kinds(); k[len(k)-1] != "*" {
		t.Errorf("Kinds = %v, want a trailing *", k)
	}
}

// Port's published mapping runs unchanged; against first-output semantics,
// the only difference is the many-relations, which list every target.
func TestOceanDefaultMappingUnchanged(t *testing.T) {
	t.Parallel()
	cfg, bps := oceanConfig(t)
	ours, err := New(cfg, Options{Blueprints: bps})
	if err != nil {
		t.Fatal(err)
	}
	single := make([]port.Blueprint, len(bps))
	for i, bp := range bps {
		rels := map[string]port.Relation{}
		for k, r := range bp.Relations {
			r.Many = false
			rels[k] = r
		}
		bp.Relations = rels
		single[i] = bp
	}
	ocean, err := New(cfg, Options{Blueprints: single})
	if err != nil {
		t.Fatal(err)
	}
	idx := newBlueprintIndex(bps)
	differing := 0
	for _, e := range exampleCatalog(t) {
		a, b := ours.Map(context.Background(), e), ocean.Map(context.Background(), e)
		if len(a.Entities) != len(b.Entities) {
			t.Fatalf("%s: %d vs %d entities", refOf(e), len(a.Entities), len(b.Entities))
		}
		for i := range a.Entities {
			x, y := a.Entities[i].Entity, b.Entities[i].Entity
			if !equalJSON(x.Properties, y.Properties) || x.Title != y.Title || x.Identifier != y.Identifier {
				t.Errorf("%s: properties differ", refOf(e))
			}
			for name, v := range x.Relations {
				if !idx.many(a.Entities[i].Blueprint, name) {
					if !equalJSON(v, y.Relations[name]) {
						t.Errorf("%s single relation %s: %v vs %v", refOf(e), name, v, y.Relations[name])
					}
					continue
				}
				all := v.([]any)
				var first any
				if len(all) > 0 {
					first = all[0]
				}
				if !equalJSON(first, y.Relations[name]) {
					t.Errorf("%s many relation %s: first of %v is not %v", refOf(e), name, all, y.Relations[name])
				}
				if len(all) > 1 {
					differing++
				}
			}
		}
	}
	if differing == 0 {
		t.Error("no many-relation had more than one target: the comparison proves nothing")
	}
}
