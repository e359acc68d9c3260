package mapcheck_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/portbridge/portbridge/sidecar/mapcheck"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
)

// The mapcheck value rules, one by one.
func TestValues(t *testing.T) {
	t.Parallel()
	bp := port.Blueprint{Identifier: "svc", Schema: port.BlueprintSchema{
		Required: []string{"owner"},
		Properties: map[string]port.Property{
			"owner": {Type: "string"}, "url": {Type: "string", Format: "url"}, "mail": {Type: "string", Format: "email"},
			"when": {Type: "string", Format: "date-time"}, "n": {Type: "number"}, "ok": {Type: "boolean"},
			"obj": {Type: "object"}, "tags": {Type: "array", Items: map[string]any{"type": "string", "enum": []any{"a", "b"}}},
		}}}
	for _, tc := range []struct{ expr, want string }{
		{`"x"`, ""},
		{`.missing`, `the value is null, and blueprint "svc" requires property "owner"`},
		{`"not a url"`, "format url"},
		{`"nobody"`, "format email"},
		{`"yesterday"`, "format date-time"},
		{`"1"`, "of type number"},
		{`1`, "of type boolean"},
		{`[1]`, "of type object"},
		{`["a", "c"]`, "item 1: the string \"c\" is not one of its enum values [a, b]"},
	} {
		prop := map[string]string{`"x"`: "owner", `.missing`: "owner", `"not a url"`: "url", `"nobody"`: "mail", `"yesterday"`: "when",
			`"1"`: "n", `1`: "ok", `[1]`: "obj", `["a", "c"]`: "tags"}[tc.expr]
		doc := fmt.Sprintf("resources:\n  - kind: component\n    selector: {query: 'true'}\n    port:\n      entity:\n        mappings:\n          identifier: .metadata.identifier\n          blueprint: '\"svc\"'\n          properties:\n            owner: '\"me\"'\n            %s: '%s'\n", prop, tc.expr)
		if prop == "owner" {
			doc = strings.Replace(doc, "            owner: '\"me\"'\n", "", 1)
		}
		mcfg, err := mapping.Load([]byte(doc), "m.yaml")
		if err != nil {
			t.Fatal(err)
		}
		ent := map[string]any{"kind": "Component", "metadata": map[string]any{"name": "x"}}
		res := mapcheck.Check(context.Background(), mapcheck.Input{Config: mcfg, Blueprints: []port.Blueprint{bp},
			Sample: func(yield func(map[string]any) bool) { yield(ent) }})
		var msgs []string
		for _, p := range res.Problems {
			if p.Severity == mapcheck.Error {
				msgs = append(msgs, p.Message)
			}
		}
		got := strings.Join(msgs, "\n")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s = %s: errors %q, want %q", prop, tc.expr, got, tc.want)
		}
	}
}

// Static checks need no sample: unknown blueprint, property, relation,
// required ones, constants that cannot fit, constant identifiers.
func TestStatic(t *testing.T) {
	t.Parallel()
	bp := port.Blueprint{Identifier: "svc", Schema: port.BlueprintSchema{Required: []string{"owner"},
		Properties: map[string]port.Property{"owner": {Type: "string"}, "n": {Type: "number"}, "language": {Type: "string"}}},
		Relations: map[string]port.Relation{"team": {Target: "group", Required: true}}}
	doc := `resources:
  - kind: component
    selector: {query: 'true'}
    port:
      entity:
        mappings:
          identifier: '"fixed"'
          blueprint: '"svc"'
          properties:
            n: '"seven"'
            langauge: .spec.language
  - kind: api
    selector: {query: 'true'}
    port:
      entity:
        mappings:
          identifier: .metadata.identifier
          blueprint: '"nope"'
`
	mcfg, err := mapping.Load([]byte(doc), "m.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res := mapcheck.Check(context.Background(), mapcheck.Input{Config: mcfg, Blueprints: []port.Blueprint{bp}, BlueprintSource: "test blueprints"})
	var got []string
	for _, p := range res.Problems {
		got = append(got, p.String())
	}
	want := []string{
		`m.yaml:7:23: warning: resources[0] (kind component) identifier: the identifier is the constant "fixed": every selected entity overwrites the same Port entity`,
		`m.yaml:8:22: error: resources[0] (kind component) relations: blueprint "svc" requires relation "team", which this resource does not map: Port refuses the entities (422)`,
		`m.yaml:9:11: error: resources[0] (kind component) properties: blueprint "svc" requires property "owner", which this resource does not map: Port refuses the entities (422)`,
		`m.yaml:10:16: error: resources[0] (kind component) properties.n: the constant "seven" does not fit property "n" of blueprint "svc": the property is of type number, the value is the string "seven"`,
		`m.yaml:11:13: error: resources[0] (kind component) properties.langauge: blueprint "svc" has no property "langauge", so Port refuses every entity of this resource (422); did you mean "language"?`,
		`m.yaml:18:22: error: resources[1] (kind api) blueprint: blueprint "nope" does not exist in test blueprints; known: svc`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
