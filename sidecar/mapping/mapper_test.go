package mapping

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/port"
)

func mustMapper(t testing.TB, doc string, opts Options) *Mapper {
	t.Helper()
	cfg, err := Load([]byte(doc), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// oneResource builds a mapping with one component resource.
func oneResource(selector, mappings string) string {
	return "resources:\n  - kind: component\n    selector:\n      query: " + selector +
		"\n    port:\n      entity:\n        mappings:\n" + mappings
}

func component(name string) map[string]any {
	return map[string]any{
		"apiVersion": "backstage.io/v1alpha1",
		"kind":       "Component",
		"metadata":   map[string]any{"name": name, "namespace": "Default", "description": "d"},
		"spec":       map[string]any{"type": "service", "owner": "team-a"},
		"relations": []any{
			map[string]any{"type": "ownedBy", "targetRef": "group:default/team-a"},
			map[string]any{"type": "providesApi", "targetRef": "api:default/a"},
			map[string]any{"type": "providesApi", "targetRef": "api:default/b"},
		},
	}
}

const baseFields = "          identifier: .metadata.identifier\n          blueprint: '\"component\"'\n"

func TestMapSemantics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name     string
		selector string
		mappings string
		opts     Options
		entity   map[string]any
		check    func(t *testing.T, r Result)
	}{
		{
			name: "identifier enrichment and many relation", selector: "'true'",
			mappings: baseFields + "          title: .metadata.title // .metadata.name\n          relations:\n" +
				"            providesApis: '.relations[] | select(.type == \"providesApi\") | .targetRef'\n" +
				"            owningGroup: '.relations[] | select(.type == \"ownedBy\") | .targetRef'\n",
			check: func(t *testing.T, r Result) {
				e := only(t, r)
				if e.Identifier != "component:default/svc" || e.Entity.Title != "svc" {
					t.Errorf("identifier %q title %q", e.Identifier, e.Entity.Title)
				}
				if got := e.Entity.Relations["providesApis"]; !equalJSON(got, []any{"api:default/a", "api:default/b"}) {
					t.Errorf("providesApis = %v, want both APIs", got)
				}
				if got := e.Entity.Relations["owningGroup"]; got != "group:default/team-a" {
					t.Errorf("owningGroup = %v", got)
				}
			},
		},
		{
			name: "selector false", selector: `'.spec.type == "website"'`, mappings: baseFields,
			check: func(t *testing.T, r Result) {
				if len(r.Entities) != 0 || len(r.Unselected) != 1 || len(r.Skipped) != 0 {
					t.Errorf("result %+v", r)
				}
			},
		},
		{
			name: "selector returning a string", selector: ".spec.type", mappings: baseFields,
			check: func(t *testing.T, r Result) {
				wantSkip(t, r, "selector.query", `selector must return a boolean, got string "service"`)
			},
		},
		{
			name: "selector error", selector: ".spec.type | keys", mappings: baseFields,
			check: func(t *testing.T, r Result) { wantSkip(t, r, "selector.query", "jq error") },
		},
		{
			name: "field error gives null and a warning", selector: "'true'",
			mappings: baseFields + "          properties:\n            bad: .spec.type | keys\n            fine: .spec.type\n",
			check: func(t *testing.T, r Result) {
				e := only(t, r)
				if v, ok := e.Entity.Properties["bad"]; !ok || v != nil {
					t.Errorf("bad = %v (present %t), want explicit null", v, ok)
				}
				if e.Entity.Properties["fine"] != "service" {
					t.Errorf("fine = %v", e.Entity.Properties["fine"])
				}
				if len(r.Warnings) != 1 || r.Warnings[0].Field != "properties.bad" || !strings.Contains(r.Warnings[0].Message, "jq error") {
					t.Errorf("warnings %+v", r.Warnings)
				}
			},
		},
		{
			name: "loop forever fails the entity", selector: "'true'", opts: Options{Timeout: 50 * time.Millisecond},
			mappings: baseFields + "          properties:\n            spin: 'def f: f; f'\n",
			check:    func(t *testing.T, r Result) { wantSkip(t, r, "", "longer than the 50ms limit") },
		},
		{
			name: "growing loop fails the entity", selector: "'true'", opts: Options{Timeout: 50 * time.Millisecond},
			mappings: baseFields + "          properties:\n            spin: '[range(1e15)] | length'\n",
			check:    func(t *testing.T, r Result) { wantSkip(t, r, "", "limit") },
		},
		{
			name: "invalid identifier", selector: "'true'",
			mappings: "          identifier: '\"bad id \" + .metadata.name'\n          blueprint: '\"component\"'\n",
			check:    func(t *testing.T, r Result) { wantSkip(t, r, "identifier", `contains ' '`) },
		},
		{
			name: "null identifier", selector: "'true'",
			mappings: "          identifier: .metadata.nope\n          blueprint: '\"component\"'\n",
			check:    func(t *testing.T, r Result) { wantSkip(t, r, "identifier", "identifier is null") },
		},
		{
			name: "missing blueprint", selector: "'true'",
			mappings: "          identifier: .metadata.identifier\n          blueprint: .spec.nope\n",
			check:    func(t *testing.T, r Result) { wantSkip(t, r, "blueprint", "blueprint is null") },
		},
		{
			name: "relation to a malformed ref is dropped", selector: "'true'",
			mappings: baseFields + "          relations:\n            system: '\"system:default/\" + .spec.system'\n",
			check: func(t *testing.T, r Result) {
				e := only(t, r)
				if v, ok := e.Entity.Relations["system"]; !ok || v != nil {
					t.Errorf("system = %v, want null", v)
				}
				if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0].Message, "empty name") {
					t.Errorf("warnings %+v", r.Warnings)
				}
			},
		},
		{
			name: "env is empty by default", selector: "'true'",
			mappings: baseFields + "          properties:\n            env: '$ENV | length'\n            env2: 'env | length'\n",
			check: func(t *testing.T, r Result) {
				e := only(t, r)
				if !equalJSON(e.Entity.Properties["env"], 0) || !equalJSON(e.Entity.Properties["env2"], 0) {
					t.Errorf("env visible: %v", e.Entity.Properties)
				}
			},
		},
		{
			name: "env when allowed", selector: "'true'", opts: Options{AllowEnv: true},
			mappings: baseFields + "          properties:\n            home: '$ENV.PATH'\n",
			check: func(t *testing.T, r Result) {
				if e := only(t, r); e.Entity.Properties["home"] != os.Getenv("PATH") {
					t.Errorf("PATH = %v", e.Entity.Properties["home"])
				}
			},
		},
		{
			name: "10 MB entity", selector: "'true'",
			entity:   withDescription(component("svc"), strings.Repeat("x", 10<<20)),
			mappings: baseFields + "          properties:\n            description: .metadata.description\n",
			check: func(t *testing.T, r Result) {
				wantSkip(t, r, "", `over the 1048576-byte limit (mapping.maxOutputBytes) (largest property "description"`)
			},
		},
		{
			name: "search-query identifier and team pass through", selector: "'true'",
			mappings: "          blueprint: '\"component\"'\n          identifier:\n            combinator: '\"and\"'\n            rules:\n" +
				"              - property: '\"name\"'\n                operator: '\"=\"'\n                value: .metadata.name\n          team: '[\"a\", \"b\"]'\n",
			check: func(t *testing.T, r Result) {
				e := only(t, r)
				want := map[string]any{"combinator": "and", "rules": []any{map[string]any{"property": "name", "operator": "=", "value": "svc"}}}
				if !e.SearchIdentifier || !equalJSON(e.Entity.Identifier, want) {
					t.Errorf("identifier %v", e.Entity.Identifier)
				}
				if !equalJSON(e.Entity.Team, []any{"a", "b"}) {
					t.Errorf("team %v", e.Entity.Team)
				}
			},
		},
		{
			name: "dynamic blueprint decides many per entity", selector: "'true'",
			mappings: "          identifier: .metadata.identifier\n          blueprint: .kind | ascii_downcase\n          relations:\n" +
				"            providesApis: '.relations[] | select(.type == \"providesApi\") | .targetRef'\n" +
				"            owningGroup: '.relations[] | select(.type == \"ownedBy\") | .targetRef'\n",
			check: func(t *testing.T, r Result) {
				e := only(t, r)
				if !equalJSON(e.Entity.Relations["providesApis"], []any{"api:default/a", "api:default/b"}) || e.Entity.Relations["owningGroup"] != "group:default/team-a" {
					t.Errorf("relations %v", e.Entity.Relations)
				}
			},
		},
		{
			name: "object property parsed from YAML text", selector: "'true'",
			opts:     Options{Blueprints: []port.Blueprint{{Identifier: "component", Schema: port.BlueprintSchema{Properties: map[string]port.Property{"doc": {Type: "object"}, "bad": {Type: "object"}}}}}},
			mappings: baseFields + "          properties:\n            doc: '\"openapi: 3.0.0\\ninfo: {title: x}\"'\n            bad: '\"- a list\"'\n",
			check: func(t *testing.T, r Result) {
				e := only(t, r)
				if !equalJSON(e.Entity.Properties["doc"], map[string]any{"openapi": "3.0.0", "info": map[string]any{"title": "x"}}) {
					t.Errorf("doc = %v", e.Entity.Properties["doc"])
				}
				if e.Entity.Properties["bad"] != nil || len(r.Warnings) != 1 || r.Warnings[0].Field != "properties.bad" {
					t.Errorf("bad = %v, warnings %+v", e.Entity.Properties["bad"], r.Warnings)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := mustMapper(t, oneResource(tt.selector, tt.mappings), tt.opts)
			e := tt.entity
			if e == nil {
				e = component("svc")
			}
			tt.check(t, m.Map(ctx, e))
		})
	}
}

func TestMapItemsToParse(t *testing.T) {
	t.Parallel()
	doc := oneResource("'true'", "          identifier: .metadata.identifier + \"-\" + .link.title\n          blueprint: '\"link\"'\n          properties:\n            url: .link.url\n            others: .metadata.links | length\n")
	doc = strings.Replace(doc, "    port:\n", "    port:\n      itemsToParse: .metadata.links\n      itemsToParseName: link\n", 1)
	m := mustMapper(t, doc, Options{})
	e := component("svc")
	e["metadata"].(map[string]any)["links"] = []any{map[string]any{"url": "https://a", "title": "a"}, map[string]any{"url": "https://b", "title": "b"}}
	r := m.Map(context.Background(), e)
	if len(r.Entities) != 2 || r.Entities[1].Identifier != "component:default/svc-b" || r.Entities[1].Entity.Properties["url"] != "https://b" {
		t.Fatalf("result %+v", r)
	}
	if got := r.Entities[0].Entity.Properties["others"]; !equalJSON(got, 0) {
		t.Errorf("itemsToParseTopLevelTransform kept the array in the parent: %v", got)
	}
	delete(e["metadata"].(map[string]any), "links")
	wantSkip(t, m.Map(context.Background(), e), "itemsToParse", "expected an array, got null")
}

func TestMapBadEntities(t *testing.T) {
	t.Parallel()
	m, err := New(DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]map[string]any{
		"no kind":     {"metadata": map[string]any{"name": "x"}},
		"no metadata": {"kind": "Component"},
		"no name":     {"kind": "Component", "metadata": map[string]any{"namespace": "x"}},
		"odd types":   {"kind": "Component", "metadata": map[string]any{"name": "x"}, "spec": map[string]any{"type": map[string]string{"go": "typed"}}, "relations": "nope"},
	} {
		r := m.Map(context.Background(), e)
		if name == "odd types" {
			// Go-typed values pass through jq untouched and still encode.
			if len(r.Entities) != 1 || !strings.Contains(string(r.Entities[0].JSON), `"type":{"go":"typed"}`) {
				t.Errorf("%s: %+v", name, r)
			}
			continue
		}
		if len(r.Entities) != 0 || len(r.Skipped) != 1 {
			t.Errorf("%s: %+v", name, r)
		}
	}
}

func TestHashIgnoresKeyOrder(t *testing.T) {
	t.Parallel()
	m, err := New(DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := `{"kind":"Component","metadata":{"name":"x","namespace":"default","labels":{"a":"1","b":"2"},"annotations":{"z":"1","y":"2"}},"spec":{"type":"service","lifecycle":"production"},"relations":[{"type":"ownedBy","targetRef":"group:default/t"}]}`
	b := `{"relations":[{"targetRef":"group:default/t","type":"ownedBy"}],"spec":{"lifecycle":"production","type":"service"},"metadata":{"annotations":{"y":"2","z":"1"},"labels":{"b":"2","a":"1"},"namespace":"default","name":"x"},"kind":"Component"}`
	c := strings.Replace(a, `"a":"1"`, `"a":"3"`, 1)
	hash := func(s string) (uint64, string) {
		var e map[string]any
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			t.Fatal(err)
		}
		r := m.Map(context.Background(), e)
		x := only(t, r)
		var back port.Entity
		if err := json.Unmarshal(x.JSON, &back); err != nil {
			t.Fatalf("JSON does not decode as a port.Entity: %v", err)
		}
		std, _ := json.Marshal(x.Entity)
		if string(std) != string(x.JSON) {
			t.Errorf("canonical JSON differs from encoding/json:\n%s\n%s", x.JSON, std)
		}
		return x.Hash, string(x.JSON)
	}
	ha, ja := hash(a)
	hb, jb := hash(b)
	hc, _ := hash(c)
	if ha != hb || ja != jb {
		t.Errorf("reordered keys changed the hash: %x %x\n%s\n%s", ha, hb, ja, jb)
	}
	if ha == hc {
		t.Error("a changed label did not change the hash")
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	doc := oneResource("'true'", baseFields)
	a, b := mustMapper(t, doc, Options{}), mustMapper(t, doc, Options{})
	if a.Fingerprint() != b.Fingerprint() {
		t.Error("same mapping, different fingerprints")
	}
	if c := mustMapper(t, strings.Replace(doc, ".metadata.identifier", ".metadata.name", 1), Options{}); c.Fingerprint() == a.Fingerprint() {
		t.Error("changed mapping, same fingerprint")
	}
	if c := mustMapper(t, doc, Options{AllowEnv: true}); c.Fingerprint() == a.Fingerprint() {
		t.Error("AllowEnv did not change the fingerprint")
	}
	if got := mustMapper(t, doc, Options{}).Kinds(); len(got) != 1 || got[0] != "component" {
		t.Errorf("Kinds = %v", got)
	}
}

func withDescription(e map[string]any, d string) map[string]any {
	e["metadata"].(map[string]any)["description"] = d
	return e
}

func only(t *testing.T, r Result) Mapped {
	t.Helper()
	if len(r.Entities) != 1 {
		t.Fatalf("got %d entities, want 1; skipped %+v warnings %+v", len(r.Entities), r.Skipped, r.Warnings)
	}
	return r.Entities[0]
}

func wantSkip(t *testing.T, r Result, field, msg string) {
	t.Helper()
	if len(r.Entities) != 0 || len(r.Skipped) != 1 {
		t.Fatalf("want one skip, got %+v", r)
	}
	if s := r.Skipped[0]; s.Field != field || !strings.Contains(s.Message, msg) {
		t.Errorf("skip %+v, want field %q message containing %q", s, field, msg)
	}
}

func equalJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
