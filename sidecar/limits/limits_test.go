package limits

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

// nested returns an entity whose spec nests objects and arrays so that the
// innermost container is at level depth (the entity itself is level 1).
func nested(depth int) map[string]any {
	var v any = "leaf"
	for i := depth; i >= 2; i-- {
		if i%2 == 0 {
			v = []any{v}
		} else {
			v = map[string]any{"x": v}
		}
	}
	return map[string]any{"kind": "Component", "metadata": map[string]any{"name": "a"}, "spec": v}
}

func TestCheckEntity(t *testing.T) {
	t.Parallel()
	small := Limits{MaxDepth: 8, MaxEntityBytes: 4096, MaxStringBytes: 1000, MaxMetadataFieldBytes: 300}
	tests := []struct {
		name   string
		entity map[string]any
		path   string // "" with want == "" means accepted
		want   string
	}{
		{"ok", nested(8), "", ""},
		{"too deep", nested(9), ".spec[0].x[0].x[0].x[0]", "nested deeper than 8 levels of objects and arrays (limits.maxDepth)"},
		{"long string", map[string]any{"kind": "C", "spec": map[string]any{"definition": strings.Repeat("y", 1001)}}, ".spec.definition", "string longer than the 1000-byte limit (limits.maxStringBytes): \"yyyy"},
		{"long key", map[string]any{"kind": "C", "spec": map[string]any{strings.Repeat("k", 1001): 1}}, ".spec", "object key longer than the 1000-byte limit (limits.maxStringBytes): \"kkk"},
		{"large entity", map[string]any{"kind": "C", "spec": map[string]any{"a": strings.Repeat("y", 900), "b": strings.Repeat("y", 900), "c": strings.Repeat("y", 900),
			"d": strings.Repeat("y", 900), "e": strings.Repeat("y", 900)}}, "", "over the 4096-byte limit as JSON (limits.maxEntityBytes)"},
		{"large metadata field", map[string]any{"kind": "C", "metadata": map[string]any{"name": "a", "annotations": map[string]any{"a": strings.Repeat("y", 200), "b": strings.Repeat("y", 200)}}},
			".metadata.annotations", "over the 300-byte limit (limits.maxMetadataFieldBytes)"},
		{"odd key in path", map[string]any{"kind": "C", "spec": map[string]any{"a b": strings.Repeat("y", 1001)}}, `.spec["a b"]`, "limits.maxStringBytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The same entity as decoded JSON and as a protobuf Struct.
			b, err := json.Marshal(tt.entity)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			st, err := structpb.NewStruct(m)
			if err != nil {
				t.Fatal(err)
			}
			for form, v := range map[string]*Violation{"map": small.CheckEntity(m), "struct": small.CheckStruct(st)} {
				switch {
				case tt.want == "" && v != nil:
					t.Errorf("%s: rejected: %v", form, v)
				case tt.want == "":
				case v == nil:
					t.Errorf("%s: accepted, want %q", form, tt.want)
				case v.Path != tt.path || !strings.Contains(v.Msg, tt.want):
					t.Errorf("%s: %q: %q, want %q: …%q", form, v.Path, v.Msg, tt.path, tt.want)
				case len(v.Error()) > 300:
					t.Errorf("%s: error is %d bytes long", form, len(v.Error()))
				}
			}
		})
	}
}

func TestDeepPathIsShort(t *testing.T) {
	t.Parallel()
	v := Limits{MaxDepth: 1000}.CheckEntity(nested(4000))
	if v == nil || len(v.Error()) > 200 || !strings.Contains(v.Msg, "limits.maxDepth") {
		t.Fatalf("violation %v", v)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
	l := Default()
	l.MaxDepth = MaxDepthCeiling + 1
	l.MaxReasonBytes = 0
	err := l.Validate()
	if err == nil || !strings.Contains(err.Error(), "key limits.maxDepth: must be at most 1000") || !strings.Contains(err.Error(), "key limits.maxReasonBytes") {
		t.Fatalf("Validate = %v", err)
	}
	if got := (Limits{MaxDepth: 3}).WithDefaults(); got.MaxDepth != 3 || got.MaxRefBytes != Default().MaxRefBytes {
		t.Fatalf("WithDefaults = %+v", got)
	}
}
