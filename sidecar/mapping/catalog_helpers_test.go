package mapping

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const stubDefinition = "openapi: 3.0.0\ninfo:\n  title: stub for an unreachable $text placeholder\n  version: '1'\npaths: {}\n"

// exampleCatalog loads Backstage's example catalog from testdata and adds
// what the catalog adds when it processes entities: the default namespace,
// resolved $text definitions and the stitched relations in both directions
// (the rules of BuiltinKindsEntityProcessor), sorted by type and target.
func exampleCatalog(t testing.TB) []map[string]any {
	t.Helper()
	root := filepath.Join("testdata", "backstage-examples")
	var entities []map[string]any
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".oas.yaml") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		list, err := ReadEntities(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, e := range list {
			resolveText(t, e, filepath.Dir(path))
			entities = append(entities, e)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(entities, func(i, j int) bool { return refOf(entities[i]) < refOf(entities[j]) })
	stitch(entities)
	return entities
}

func resolveText(t testing.TB, e map[string]any, dir string) {
	meta := e["metadata"].(map[string]any)
	if ns, _ := meta["namespace"].(string); ns == "" {
		meta["namespace"] = "default"
	}
	spec, _ := e["spec"].(map[string]any)
	def, ok := spec["definition"].(map[string]any)
	if !ok {
		return
	}
	target, _ := def["$text"].(string)
	if strings.HasPrefix(target, "./") {
		b, err := os.ReadFile(filepath.Join(dir, target))
		if err != nil {
			t.Fatal(err)
		}
		spec["definition"] = string(b)
		return
	}
	spec["definition"] = stubDefinition
}

func refOf(e map[string]any) string {
	meta := e["metadata"].(map[string]any)
	return strings.ToLower(fmt.Sprintf("%s:%s/%s", e["kind"], meta["namespace"], meta["name"]))
}

// parseRefIn resolves a Backstage ref written in an entity of namespace ns.
func parseRefIn(s, defaultKind, ns string) string {
	kind := defaultKind
	if i := strings.IndexByte(s, ':'); i >= 0 {
		kind, s = s[:i], s[i+1:]
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		ns, s = s[:i], s[i+1:]
	}
	return strings.ToLower(kind + ":" + ns + "/" + s)
}

func stitch(entities []map[string]any) {
	type rel struct{ typ, target string }
	rels := map[string]map[rel]bool{}
	add := func(src, typ, dst, rev string) {
		for _, x := range []struct{ from, typ, to string }{{src, typ, dst}, {dst, rev, src}} {
			if rels[x.from] == nil {
				rels[x.from] = map[rel]bool{}
			}
			rels[x.from][rel{x.typ, x.to}] = true
		}
	}
	refs := func(v any) []string {
		switch v := v.(type) {
		case string:
			return []string{v}
		case []any:
			var out []string
			for _, x := range v {
				if s, ok := x.(string); ok {
					out = append(out, s)
				}
			}
			return out
		}
		return nil
	}
	for _, e := range entities {
		src := refOf(e)
		ns := e["metadata"].(map[string]any)["namespace"].(string)
		spec, _ := e["spec"].(map[string]any)
		kind := strings.ToLower(e["kind"].(string))
		on := func(field, defKind, typ, rev string) {
			for _, r := range refs(spec[field]) {
				add(src, typ, parseRefIn(r, defKind, ns), rev)
			}
		}
		switch kind {
		case "component", "api", "resource", "system", "domain", "template":
			on("owner", "group", "ownedBy", "ownerOf")
		}
		switch kind {
		case "component":
			on("subcomponentOf", "component", "partOf", "hasPart")
			on("providesApis", "api", "providesApi", "apiProvidedBy")
			on("consumesApis", "api", "consumesApi", "apiConsumedBy")
		}
		switch kind {
		case "component", "api", "resource":
			on("system", "system", "partOf", "hasPart")
		case "system":
			on("domain", "domain", "partOf", "hasPart")
		case "domain":
			on("subdomainOf", "domain", "partOf", "hasPart")
		case "user":
			on("memberOf", "group", "memberOf", "hasMember")
		case "group":
			on("parent", "group", "childOf", "parentOf")
			on("children", "group", "parentOf", "childOf")
			on("members", "user", "hasMember", "memberOf")
		}
		if kind == "component" || kind == "resource" {
			on("dependsOn", "", "dependsOn", "dependencyOf")
			on("dependencyOf", "", "dependencyOf", "dependsOn")
		}
	}
	for _, e := range entities {
		var list []rel
		for r := range rels[refOf(e)] {
			list = append(list, r)
		}
		sort.Slice(list, func(i, j int) bool {
			if list[i].typ != list[j].typ {
				return list[i].typ < list[j].typ
			}
			return list[i].target < list[j].target
		})
		out := make([]any, 0, len(list))
		for _, r := range list {
			out = append(out, map[string]any{"type": r.typ, "targetRef": r.target})
		}
		e["relations"] = out
	}
}

// generatedNDJSON returns n entities as NDJSON: copies of the example
// catalog with distinct names and descriptions, decoded the way the catalog
// client decodes them.
func generatedNDJSON(t testing.TB, n int) []byte {
	t.Helper()
	base := exampleCatalog(t)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i := 0; i < n; i++ {
		src := base[i%len(base)]
		raw, err := json.Marshal(src)
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]any
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		meta := e["metadata"].(map[string]any)
		if copyN := i / len(base); copyN > 0 {
			meta["name"] = fmt.Sprintf("%s-g%d", meta["name"], copyN)
			meta["description"] = fmt.Sprintf("generated copy %d of %s", copyN, refOf(src))
		}
		if err := enc.Encode(e); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}
