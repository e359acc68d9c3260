package catalogtest

import (
	"fmt"
	"strconv"
	"strings"
)

// kv is one row of Backstage's search table for an entity.
type kv struct {
	key  string
	val  string
	null bool
}

// Backstage indexes keys and values up to this length; longer values are
// stored as NULL, longer keys not at all.
const maxSearchLen = 200

var skippedSearchPaths = map[string]bool{
	"attachments": true, "relations": true, "status": true,
	"metadata.name": true, "metadata.namespace": true, "metadata.uid": true, "metadata.etag": true,
}

// flatten builds the search rows of a stitched entity as Backstage's
// buildEntitySearch does.
func flatten(e map[string]any) []kv {
	var out []kv
	add := func(key string, v any) {
		key = strings.ToLower(key)
		if len(key) > maxSearchLen {
			return
		}
		row := kv{key: key}
		switch x := v.(type) {
		case nil:
			row.null = true
		case string:
			row.val = strings.ToLower(x)
		case bool:
			row.val = strconv.FormatBool(x)
		case float64:
			row.val = strconv.FormatFloat(x, 'f', -1, 64)
		default:
			row.val = strings.ToLower(fmt.Sprint(x))
		}
		if len(row.val) > maxSearchLen {
			row.val, row.null = "", true
		}
		out = append(out, row)
	}
	var visit func(path string, v any)
	visit = func(path string, v any) {
		if skippedSearchPaths[path] {
			return
		}
		switch x := v.(type) {
		case map[string]any:
			for k, val := range x {
				p := k
				if path != "" {
					p = path + "." + k
				}
				visit(p, val)
			}
		case []any:
			for _, item := range x {
				visit(path, item)
				if s, ok := item.(string); ok {
					add(path+"."+s, true)
				}
			}
		default:
			add(path, v)
		}
	}
	visit("", e)
	meta, _ := e["metadata"].(map[string]any)
	for _, k := range []string{"name", "namespace", "uid"} {
		if v, ok := meta[k]; ok {
			add("metadata."+k, v)
		}
	}
	if _, ok := meta["namespace"]; !ok {
		add("metadata.namespace", "default")
	}
	rels, _ := e["relations"].([]any)
	for _, r := range rels {
		m, _ := r.(map[string]any)
		t, _ := m["type"].(string)
		add("relations."+t, m["targetRef"])
	}
	return out
}

// condition is one key of a filter: the key exists, or has one of values.
type condition struct {
	key    string
	values []string // lower-cased; empty means "exists"
}

// filter is a parsed `filter` parameter: all conditions must hold.
type filter []condition

// parseFilter parses one `k1=v1,k2=v2,k3` filter string.
func parseFilter(s string) (filter, error) {
	byKey := map[string]int{}
	var f filter
	for _, stmt := range strings.Split(s, ",") {
		stmt = strings.TrimSpace(stmt)
		if stmt == "" {
			continue
		}
		key, val, hasVal := strings.Cut(stmt, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		if key == "" {
			return nil, inputError("Invalid filter, '" + stmt + "' is not a valid statement (expected a string on the form a=b or a= or a)")
		}
		i, ok := byKey[key]
		if !ok {
			i = len(f)
			byKey[key] = i
			f = append(f, condition{key: key})
		}
		if hasVal {
			f[i].values = append(f[i].values, strings.ToLower(strings.TrimSpace(val)))
		}
	}
	return f, nil
}

func (f filter) matches(rows []kv) bool {
	for _, c := range f {
		found := false
		for _, r := range rows {
			if r.key != c.key {
				continue
			}
			if len(c.values) == 0 {
				found = true
				break
			}
			if !r.null && contains(c.values, r.val) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// anyFilter ORs filters; no filters match everything.
type anyFilter []filter

func (fs anyFilter) matches(rows []kv) bool {
	if len(fs) == 0 {
		return true
	}
	for _, f := range fs {
		if f.matches(rows) {
			return true
		}
	}
	return false
}

// sortValue is the search value an entity sorts by for key, or nil.
func sortValue(rows []kv, key string) *string {
	var best *string
	for i := range rows {
		if rows[i].key == key && !rows[i].null {
			if best == nil || rows[i].val < *best {
				best = &rows[i].val
			}
		}
	}
	return best
}
