package mapping

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// FuzzLoad: the port-app-config loader never panics, its errors name the
// file (and, past the YAML syntax, the key or the line), and a document it
// accepts compiles or fails with a named error, and maps an entity without
// an internal error.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(goodMapping))
	if b, err := os.ReadFile("defaults/port-app-config.yaml"); err == nil {
		f.Add(b)
	}
	if b, err := os.ReadFile("testdata/ocean-port-app-config.yaml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"resources:\n  - kind: [unclosed\n",
		"resource:\n  - kind: x\n",
		"entityDeletionThreshold: 2\nresources: []\n",
		"enableMergeEntity: yes please\nresources: []\n",
		"resources:\n  - kind: c\n    selector:\n      query: 'true'\n    port:\n      entity:\n        mappings:\n          identifier: .metadata.name\n          blueprint: '\"c\"'\n          properties:\n            a: '.x | | y'\n",
		"resources:\n  - kind: c\n    selector:\n      query: 'true'\n    port:\n      itemsToParse: .spec.items\n      entity:\n        mappings:\n          identifier: .item.id\n          blueprint: '\"c\"'\n          relations:\n            r:\n              combinator: '\"and\"'\n              rules:\n                - property: '\"x\"'\n                  operator: '\"=\"'\n                  value: .item.v\n",
		"a: &a [*a]\n",
		"resources: *x\n",
		"- 1\n- 2\n",
		"",
		"resources:\n  - kind: c\n    selector: {query: 'true'}\n    port: {entity: {mappings: {identifier: '.a + .b * 2', blueprint: '\"c\"', title: '\"\\(.a)\" | tostring'}}}\n",
	} {
		f.Add([]byte(s))
	}
	entity := map[string]any{"apiVersion": "backstage.io/v1alpha1", "kind": "C", "metadata": map[string]any{"name": "a"},
		"spec": map[string]any{"items": []any{map[string]any{"id": "i1", "v": 1}}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Load(data, "fuzz.yaml")
		if err != nil {
			checkNamed(t, err, true)
			return
		}
		m, err := New(cfg, Options{Timeout: 200 * time.Millisecond, MemoryBudget: 8 << 20})
		if err != nil {
			checkNamed(t, err, false)
			return
		}
		for _, k := range m.Kinds() {
			e := entity
			if k != "*" {
				e = map[string]any{"kind": k, "metadata": entity["metadata"], "spec": entity["spec"]}
			}
			r := m.Map(context.Background(), e)
			for _, s := range r.Skipped {
				if strings.Contains(s.Message, "internal error") {
					t.Fatalf("kind %s: %s", k, s.Message)
				}
			}
		}
	})
}

// checkNamed fails unless err is a *ConfigError naming the file, and a key
// or a line unless it is about the document as a whole.
func checkNamed(t *testing.T, err error, fromLoad bool) {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		if fromLoad {
			t.Fatalf("error %T is not a *ConfigError: %v", err, err)
		}
		if !strings.Contains(err.Error(), "fuzz.yaml") {
			t.Fatalf("error does not name the file: %v", err)
		}
		return
	}
	if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
		t.Fatalf("error does not start with the file: %v", err)
	}
	whole := strings.HasPrefix(ce.Msg, "invalid YAML") || ce.Msg == "document is empty"
	if !whole && ce.Key == "" && ce.Line == 0 {
		t.Fatalf("error names neither a key nor a line: %v", err)
	}
	if len(err.Error()) > 4096 {
		t.Fatalf("error of %d bytes", len(err.Error()))
	}
}
