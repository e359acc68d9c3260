package mapping

import (
	"strings"
	"testing"
)

// The default mapping goes to Port as a JSON object and comes back as the
// same mapping: same resources, same fingerprint.
func TestDocumentRoundTrip(t *testing.T) {
	t.Parallel()
	doc, err := Document(DefaultMappingYAML(), "default")
	if err != nil {
		t.Fatal(err)
	}
	back, err := LoadDocument(doc, "port")
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(back, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint() != b.Fingerprint() || len(back.Resources) != len(DefaultConfig().Resources) {
		t.Fatalf("round trip changed the mapping: %s vs %s, %d resources", a.Fingerprint(), b.Fingerprint(), len(back.Resources))
	}
	if _, ok := doc["resources"].([]any); !ok {
		t.Fatalf("resources is %T", doc["resources"])
	}
}

func TestDocumentErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		yaml string
		want string
	}{
		{"not yaml", "resources: [", "invalid YAML"},
		{"unknown key", "resources: []\nfoo: 1\n", "foo: unknown key"},
		{"a list", "- kind: component\n", "must be a mapping"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Document([]byte(tt.yaml), "f.yaml"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		doc  map[string]any
		want string
	}{
		{"empty", map[string]any{}, "no resources"},
		{"nil", nil, "no resources"},
		{"no resources key", map[string]any{"deleteDependentEntities": true}, "resources: missing"},
		{"resource without blueprint", map[string]any{"resources": []any{map[string]any{"kind": "component", "selector": map[string]any{"query": "true"},
			"port": map[string]any{"entity": map[string]any{"mappings": map[string]any{"identifier": ".metadata.name"}}}}}},
			"resources[0].port.entity.mappings.blueprint: missing"},
		{"threshold out of range", map[string]any{"resources": []any{}, "entityDeletionThreshold": 2.0}, "entityDeletionThreshold: must be a number between 0 and 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := LoadDocument(tt.doc, "integration portbridge"); err == nil || !strings.Contains(err.Error(), tt.want) ||
				!strings.Contains(err.Error(), "integration portbridge") {
				t.Fatalf("got %v, want %q naming the integration", err, tt.want)
			}
		})
	}
}

func TestCheckBlueprints(t *testing.T) {
	t.Parallel()
	const head = "resources:\n  - kind: component\n    selector: {query: 'true'}\n    port:\n      entity:\n        mappings:\n          identifier: .metadata.identifier\n"
	for _, tt := range []struct {
		name string
		body string
		want []string // "" means valid
	}{
		{"the default mapping", "", nil},
		{"valid", "          blueprint: '\"component\"'\n          properties: {description: .metadata.description}\n          relations: {system: .spec.system}\n", nil},
		{"jq blueprint is not checked", "          blueprint: '.kind | ascii_downcase'\n          properties: {nope: .x}\n", nil},
		{"missing blueprint", "          blueprint: '\"service\"'\n", []string{`resources[0].port.entity.mappings.blueprint: (kind component) blueprint "service" does not exist in Port`}},
		{"unknown property and relation", "          blueprint: '\"component\"'\n          properties: {descripton: .metadata.description, colour: .x}\n          relations: {owner: .spec.owner}\n",
			[]string{`mappings.properties.colour: (kind component) blueprint component has no property "colour"`,
				`mappings.properties.descripton: (kind component) blueprint component has no property "descripton"`,
				`mappings.relations.owner: (kind component) blueprint component has no relation "owner"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.body != "" {
				var err error
				if cfg, err = Load([]byte(head+tt.body), "port"); err != nil {
					t.Fatal(err)
				}
			}
			err := CheckBlueprints(cfg, DefaultBlueprints())
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
