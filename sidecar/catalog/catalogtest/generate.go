package catalogtest

import (
	"fmt"
	"iter"
	"math/rand/v2"
	"strings"

	"github.com/portbridge/portbridge/sidecar/catalog"
)

// Generate yields n synthetic entities with realistic kinds, relations and
// sizes (about 1–3 KB of JSON each), the same for the same n and seed. Of
// every 100: 1 domain, 3 systems, 5 groups, 25 users, 15 APIs, 10 resources
// and 41 components. Every reference resolves within the n entities. It
// builds one entity at a time, so UpsertAll(Generate(1_000_000, 1)) does
// not hold a million maps.
func Generate(n int, seed int64) iter.Seq[catalog.Entity] {
	counts := struct{ domains, systems, groups, users, apis, resources int }{
		max(1, n/100), max(1, n*3/100), max(1, n*5/100), n * 25 / 100, n * 15 / 100, n * 10 / 100,
	}
	return func(yield func(catalog.Entity) bool) {
		rng := rand.New(rand.NewPCG(uint64(seed), uint64(seed)*31+7))
		pick := func(prefix string, count int) string {
			return fmt.Sprintf("%s-%06d", prefix, rng.IntN(count))
		}
		lifecycles := []string{"production", "experimental", "deprecated"}
		langs := []string{"go", "java", "python", "typescript", "rust", "kotlin"}
		i := 0
		emit := func(kind, name string, spec map[string]any) bool {
			if i >= n {
				return false
			}
			i++
			tags := []any{langs[rng.IntN(len(langs))], "tier-" + fmt.Sprint(rng.IntN(3)+1)}
			e := catalog.Entity{
				"apiVersion": "backstage.io/v1alpha1",
				"kind":       kind,
				"metadata": map[string]any{
					"name":        name,
					"title":       strings.ToUpper(name[:1]) + name[1:],
					"description": fmt.Sprintf("Synthetic %s %s. %s", strings.ToLower(kind), name, strings.Repeat("Lorem ipsum dolor sit amet. ", 2+rng.IntN(6))),
					"tags":        tags,
					"labels":      map[string]any{"cost-center": fmt.Sprintf("cc-%03d", rng.IntN(200))},
					"annotations": map[string]any{
						"backstage.io/source-location": "url:https://git.example.com/org/" + name + "/",
						"github.com/project-slug":      "org/" + name,
					},
					"links": []any{map[string]any{"url": "https://dash.example.com/" + name, "title": "Dashboard"}},
				},
				"spec": spec,
			}
			return yield(e)
		}
		for d := 0; d < counts.domains; d++ {
			spec := map[string]any{"owner": pick("group", counts.groups)}
			if d > 0 {
				spec["subdomainOf"] = fmt.Sprintf("domain-%06d", rng.IntN(d))
			}
			if !emit("Domain", fmt.Sprintf("domain-%06d", d), spec) {
				return
			}
		}
		for s := 0; s < counts.systems; s++ {
			if !emit("System", fmt.Sprintf("system-%06d", s), map[string]any{"owner": pick("group", counts.groups), "domain": pick("domain", counts.domains)}) {
				return
			}
		}
		for g := 0; g < counts.groups; g++ {
			spec := map[string]any{"type": "team", "children": []any{}, "profile": map[string]any{"displayName": fmt.Sprintf("Team %d", g), "email": fmt.Sprintf("team-%d@example.com", g)}}
			if g > 0 {
				spec["parent"] = fmt.Sprintf("group-%06d", rng.IntN(g))
			}
			if !emit("Group", fmt.Sprintf("group-%06d", g), spec) {
				return
			}
		}
		for u := 0; u < counts.users; u++ {
			spec := map[string]any{"memberOf": []any{pick("group", counts.groups)}, "profile": map[string]any{"displayName": fmt.Sprintf("User %d", u), "email": fmt.Sprintf("user-%d@example.com", u)}}
			if !emit("User", fmt.Sprintf("user-%06d", u), spec) {
				return
			}
		}
		for a := 0; a < counts.apis; a++ {
			def := "openapi: 3.0.0\ninfo:\n  title: api\n  version: 1.0.0\npaths:\n" + strings.Repeat("  /things/{id}:\n    get:\n      responses:\n        '200':\n          description: ok\n", 3+rng.IntN(10))
			if !emit("API", fmt.Sprintf("api-%06d", a), map[string]any{"type": "openapi", "lifecycle": lifecycles[rng.IntN(3)], "owner": pick("group", counts.groups), "system": pick("system", counts.systems), "definition": def}) {
				return
			}
		}
		for r := 0; r < counts.resources; r++ {
			if !emit("Resource", fmt.Sprintf("resource-%06d", r), map[string]any{"type": "database", "owner": pick("group", counts.groups), "system": pick("system", counts.systems)}) {
				return
			}
		}
		for c := 0; i < n; c++ {
			spec := map[string]any{"type": "service", "lifecycle": lifecycles[rng.IntN(3)], "owner": pick("group", counts.groups), "system": pick("system", counts.systems)}
			if counts.apis > 0 {
				spec["providesApis"] = []any{pick("api", counts.apis)}
				spec["consumesApis"] = []any{pick("api", counts.apis), pick("api", counts.apis)}
			}
			if counts.resources > 0 {
				spec["dependsOn"] = []any{"resource:" + pick("resource", counts.resources)}
			}
			if c > 0 && rng.IntN(4) == 0 {
				spec["dependsOn"] = append(spec["dependsOn"].([]any), fmt.Sprintf("component:component-%06d", rng.IntN(c)))
			}
			if !emit("Component", fmt.Sprintf("component-%06d", c), spec) {
				return
			}
		}
	}
}
