package suggest

import (
	"strings"
	"testing"

	"github.com/portbridge/portbridge/sidecar/port"
)

func bp() port.Blueprint {
	return port.Blueprint{Identifier: "svc", Title: "Service", Schema: port.BlueprintSchema{
		Required:   []string{"type"},
		Properties: map[string]port.Property{"type": {Type: "string", Enum: []any{"a", "b"}}, "x": {Type: "string"}}},
		Relations: map[string]port.Relation{"team": {Target: "group", Many: false}}}
}

func TestSuperset(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(b *port.Blueprint)
		want string // "" = superset
	}{
		{"same", func(b *port.Blueprint) {}, ""},
		{"property added", func(b *port.Blueprint) { b.Schema.Properties["y"] = port.Property{Type: "number"} }, ""},
		{"enum value added", func(b *port.Blueprint) {
			p := b.Schema.Properties["type"]
			p.Enum = append(p.Enum, "c")
			b.Schema.Properties["type"] = p
		}, ""},
		{"relation added", func(b *port.Blueprint) { b.Relations["dep"] = port.Relation{Target: "svc", Many: true} }, ""},
		{"property removed", func(b *port.Blueprint) { delete(b.Schema.Properties, "x") }, "schema.properties.x: removed"},
		{"enum value removed", func(b *port.Blueprint) {
			p := b.Schema.Properties["type"]
			p.Enum = []any{"a"}
			b.Schema.Properties["type"] = p
		}, "schema.properties.type.enum: b removed"},
		{"new enum", func(b *port.Blueprint) {
			p := b.Schema.Properties["x"]
			p.Enum = []any{"only"}
			b.Schema.Properties["x"] = p
		}, ""}, // structurally an addition; Plan never puts new enums in a Patch
		{"type changed", func(b *port.Blueprint) { b.Schema.Properties["x"] = port.Property{Type: "number"} }, "schema.properties.x.type: string changed to number"},
		{"relation made many", func(b *port.Blueprint) { b.Relations["team"] = port.Relation{Target: "group", Many: true} }, "relations.team.many: false changed to true"},
		{"title changed", func(b *port.Blueprint) { b.Title = "Other" }, "title: Service changed to Other"},
	} {
		after := bp()
		after.Schema.Properties = map[string]port.Property{}
		for k, v := range bp().Schema.Properties {
			after.Schema.Properties[k] = v
		}
		after.Relations = map[string]port.Relation{"team": bp().Relations["team"]}
		tc.edit(&after)
		err := Superset(bp(), after)
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// Patch carries only the changes that apply, on top of the blueprint as it
// is, and the result is always a superset of it.
func TestPatchOnlyAdds(t *testing.T) {
	t.Parallel()
	changes := []Change{
		{Path: "schema.properties.type.enum", Kind: "enum-values", Value: []string{"c", "a"}, Applies: true},
		{Path: "schema.properties.x.enum", Kind: "enum", Value: []string{"only"}},
		{Path: "schema.properties.y", Kind: "property", Value: map[string]any{"type": "number", "title": "Y"}, Applies: true},
		{Path: "schema.properties.x", Kind: "property", Value: map[string]any{"type": "number"}, Applies: true}, // exists: never replaced
		{Path: "relations.dep", Kind: "relation", Value: map[string]any{"target": "svc", "many": true}, Applies: true},
		{Path: "relations.team", Kind: "unused-relation"},
	}
	patch := Patch(bp(), changes)
	var after port.Blueprint
	if err := remarshal(map[string]any{"identifier": "svc", "title": "Service", "schema": patch["schema"], "relations": patch["relations"]}, &after); err != nil {
		t.Fatal(err)
	}
	if err := Superset(bp(), after); err != nil {
		t.Fatal(err)
	}
	if got := after.Schema.Properties["type"].Enum; len(got) != 3 || got[2] != "c" {
		t.Errorf("enum %v, want a, b, c", got)
	}
	if e := after.Schema.Properties["x"]; len(e.Enum) != 0 || e.Type != "string" {
		t.Errorf("x %+v: changed", e)
	}
	if _, ok := after.Relations["team"]; !ok {
		t.Error("unused relation removed")
	}
	if Patch(bp(), changes[1:2]) != nil {
		t.Error("a patch for a change that does not apply")
	}
}
