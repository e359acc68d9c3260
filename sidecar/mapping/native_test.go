package mapping

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/portbridge/portbridge/sidecar/port"
)

// The native evaluator must agree with gojq on every input: the same
// mapping with the expression written so that it is not recognised (a
// trailing "| .") runs in gojq only.
func TestNativeRelationFilterMatchesGojq(t *testing.T) {
	t.Parallel()
	const native = `.relations[]? | select(.type == "ownedBy" and (.targetRef | startswith("group:"))) | .targetRef`
	doc := func(expr string) []byte {
		return []byte(`resources:
  - kind: component
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .metadata.identifier
          blueprint: '"component"'
          relations:
            owningGroup: '` + expr + `'
            owners: '` + expr + `'
`)
	}
	mapperFor := func(expr string) *Mapper {
		cfg, err := Load(doc(expr), "native.yaml")
		if err != nil {
			t.Fatal(err)
		}
		bp := port.Blueprint{Identifier: "component", Relations: map[string]port.Relation{
			"owningGroup": {Target: "group"}, "owners": {Target: "group", Many: true}}}
		m, err := New(cfg, Options{Blueprints: []port.Blueprint{bp}})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	fast, slow := mapperFor(native), mapperFor(native+" | .")
	if len(fast.resources[0].native) != 2 || len(slow.resources[0].native) != 0 || fast.resources[0].native[0].all == fast.resources[0].native[1].all {
		t.Fatalf("native slots: %d and %d", len(fast.resources[0].native), len(slow.resources[0].native))
	}
	cases := map[string]string{
		"no relations":        `{}`,
		"null relations":      `{"relations": null}`,
		"matches":             `{"relations": [{"type": "ownedBy", "targetRef": "group:default/a"}, {"type": "ownedBy", "targetRef": "user:default/u"}, {"type": "ownedBy", "targetRef": "group:default/b"}]}`,
		"other types":         `{"relations": [{"type": "partOf", "targetRef": "group:default/a"}, {"targetRef": "group:default/x"}]}`,
		"object relations":    `{"relations": {"a": {"type": "ownedBy", "targetRef": "group:default/a"}}}`,
		"string relations":    `{"relations": "nope"}`,
		"non-object element":  `{"relations": [1]}`,
		"numeric type":        `{"relations": [{"type": 3, "targetRef": "group:x"}]}`,
		"non-string target":   `{"relations": [{"type": "ownedBy", "targetRef": 7}]}`,
		"target of non-match": `{"relations": [{"type": "memberOf", "targetRef": 7}]}`,
	}
	for name, rels := range cases {
		t.Run(name, func(t *testing.T) {
			ent := map[string]any{}
			if err := json.Unmarshal([]byte(rels), &ent); err != nil {
				t.Fatal(err)
			}
			ent["kind"] = "Component"
			ent["metadata"] = map[string]any{"name": "x"}
			a := fast.Map(context.Background(), ent)
			b := slow.Map(context.Background(), ent)
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if string(ja) != string(jb) {
				t.Fatalf("native and gojq differ\nnative: %s\ngojq:   %s", ja, jb)
			}
		})
	}
}
