package plan

import (
	"encoding/json"
	"reflect"
	"slices"
)

// FieldChanges lists the fields that differ between two Port entities given
// as JSON objects (identifier, title, icon, team, properties.*,
// relations.*), sorted by path. A nil old means the entity is new. Values
// absent, null or empty are treated alike, as Port treats them.
func FieldChanges(old, new map[string]any) []FieldChange {
	var out []FieldChange
	for _, f := range []string{"identifier", "title", "icon", "team"} {
		diffValue(&out, f, old[f], new[f])
	}
	for _, group := range []string{"properties", "relations"} {
		o, _ := old[group].(map[string]any)
		n, _ := new[group].(map[string]any)
		keys := map[string]bool{}
		for k := range o {
			keys[k] = true
		}
		for k := range n {
			keys[k] = true
		}
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			diffValue(&out, group+"."+k, o[k], n[k])
		}
	}
	return out
}

func diffValue(out *[]FieldChange, path string, a, b any) {
	a, b = normal(a), normal(b)
	if a == nil && b == nil {
		return
	}
	if reflect.DeepEqual(a, b) {
		return
	}
	*out = append(*out, FieldChange{Path: path, Old: a, New: b})
}

// normal maps empty values to nil and numbers to float64, so values read
// back from JSON compare equal to the ones sent.
func normal(v any) any {
	switch t := v.(type) {
	case nil:
		return nil
	case string:
		if t == "" {
			return nil
		}
	case []any:
		if len(t) == 0 {
			return nil
		}
	case map[string]any:
		if len(t) == 0 {
			return nil
		}
	case []string:
		if len(t) == 0 {
			return nil
		}
		out := make([]any, len(t))
		for i, s := range t {
			out[i] = s
		}
		return out
	case int:
		return float64(t)
	case int64:
		return float64(t)
	case json.Number:
		if f, err := t.Float64(); err == nil {
			return f
		}
	}
	return v
}
