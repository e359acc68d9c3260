package catalogtest

import (
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/portbridge/portbridge/sidecar/catalog"
)

// Generate yields n synthetic entities with realistic kinds, relations and
// sizes (about 1–3 KB of JSON each), the same for the same n and seed. Of
// every 100: 1 domain, 3 systems, 5 groups, 25 users, 15 APIs, 10 resources
// and 41 components. Every reference resolves within the n entities (for n
// of 100 or more). Entity i depends only on n, seed and i (see
// GeneratedEntity), so UpsertAll(Generate(1_000_000, 1)) holds one decoded
// entity at a time and AddGenerated can store none.
func Generate(n int, seed int64) iter.Seq[catalog.Entity] {
	return func(yield func(catalog.Entity) bool) {
		l := newLayout(n, seed)
		for i := range max(n, 0) {
			if !yield(l.entity(i)) {
				return
			}
		}
	}
}

// GeneratedEntity returns entity i (0 ≤ i < n) of Generate(n, seed).
func GeneratedEntity(n int, seed int64, i int) (catalog.Entity, error) {
	if i < 0 || i >= n {
		return nil, fmt.Errorf("generated entity %d: out of range [0, %d)", i, n)
	}
	return newLayout(n, seed).entity(i), nil
}

// layout is where each kind's block starts in a generated catalog; entity i
// is rendered from its index alone.
type layout struct {
	n                                                 int
	seed                                              uint64
	domains, systems, groups, users, apis, resources  int
	systemsAt, groupsAt, usersAt, apisAt, resourcesAt int
	componentsAt                                      int
}

func newLayout(n int, seed int64) *layout {
	l := &layout{n: n, seed: uint64(seed),
		domains: max(1, n/100), systems: max(1, n*3/100), groups: max(1, n*5/100),
		users: n * 25 / 100, apis: n * 15 / 100, resources: n * 10 / 100}
	l.systemsAt = l.domains
	l.groupsAt = l.systemsAt + l.systems
	l.usersAt = l.groupsAt + l.groups
	l.apisAt = l.usersAt + l.users
	l.resourcesAt = l.apisAt + l.apis
	l.componentsAt = l.resourcesAt + l.resources
	return l
}

var (
	genLifecycles = []string{"production", "experimental", "deprecated"}
	genLangs      = []string{"go", "java", "python", "typescript", "rust", "kotlin"}
)

const loremSentence = "Lorem ipsum dolor sit amet. "

func genName(prefix string, i int) string {
	s := strconv.Itoa(i)
	if len(s) < 6 {
		s = strings.Repeat("0", 6-len(s)) + s
	}
	return prefix + "-" + s
}

// field is one key of a generated object; val is a string, a []string or
// a []field.
type field struct {
	key string
	val any
}

// genEntity is the random choices of one generated entity.
type genEntity struct {
	kind, name, description, costCenter string
	tags                                []string
	spec                                []field
}

// kindAndName returns entity i's kind and name (no random choice decides
// them).
func (l *layout) kindAndName(i int) (string, string) {
	switch {
	case i < l.systemsAt:
		return "Domain", genName("domain", i)
	case i < l.groupsAt:
		return "System", genName("system", i-l.systemsAt)
	case i < l.usersAt:
		return "Group", genName("group", i-l.groupsAt)
	case i < l.apisAt:
		return "User", genName("user", i-l.usersAt)
	case i < l.resourcesAt:
		return "API", genName("api", i-l.apisAt)
	case i < l.componentsAt:
		return "Resource", genName("resource", i-l.resourcesAt)
	}
	return "Component", genName("component", i-l.componentsAt)
}

// choose makes entity i's random choices with a generator seeded with
// (seed, i). Spec lists Backstage sorts are sorted here.
func (l *layout) choose(i int) genEntity {
	rng := rand.New(rand.NewPCG(l.seed, uint64(i)*0x9e3779b97f4a7c15+0x632be59bd9b4e019))
	pick := func(prefix string, count int) string { return genName(prefix, rng.IntN(count)) }
	var g genEntity
	switch {
	case i < l.systemsAt:
		d := i
		g.kind, g.name = "Domain", genName("domain", d)
		g.spec = []field{{"owner", pick("group", l.groups)}}
		if d > 0 {
			g.spec = append(g.spec, field{"subdomainOf", pick("domain", d)})
		}
	case i < l.groupsAt:
		g.kind, g.name = "System", genName("system", i-l.systemsAt)
		g.spec = []field{{"owner", pick("group", l.groups)}, {"domain", pick("domain", l.domains)}}
	case i < l.usersAt:
		n := i - l.groupsAt
		g.kind, g.name = "Group", genName("group", n)
		g.spec = []field{{"type", "team"}, {"children", []string{}},
			{"profile", []field{{"displayName", "Team " + strconv.Itoa(n)}, {"email", "team-" + strconv.Itoa(n) + "@example.com"}}}}
		if n > 0 {
			g.spec = append(g.spec, field{"parent", pick("group", n)})
		}
	case i < l.apisAt:
		u := i - l.usersAt
		g.kind, g.name = "User", genName("user", u)
		g.spec = []field{{"memberOf", []string{pick("group", l.groups)}},
			{"profile", []field{{"displayName", "User " + strconv.Itoa(u)}, {"email", "user-" + strconv.Itoa(u) + "@example.com"}}}}
	case i < l.resourcesAt:
		g.kind, g.name = "API", genName("api", i-l.apisAt)
		def := "openapi: 3.0.0\ninfo:\n  title: api\n  version: 1.0.0\npaths:\n" +
			strings.Repeat("  /things/{id}:\n    get:\n      responses:\n        '200':\n          description: ok\n", 3+rng.IntN(10))
		g.spec = []field{{"type", "openapi"}, {"lifecycle", genLifecycles[rng.IntN(3)]}, {"owner", pick("group", l.groups)},
			{"system", pick("system", l.systems)}, {"definition", def}}
	case i < l.componentsAt:
		g.kind, g.name = "Resource", genName("resource", i-l.resourcesAt)
		g.spec = []field{{"type", "database"}, {"owner", pick("group", l.groups)}, {"system", pick("system", l.systems)}}
	default:
		c := i - l.componentsAt
		g.kind, g.name = "Component", genName("component", c)
		g.spec = []field{{"type", "service"}, {"lifecycle", genLifecycles[rng.IntN(3)]}, {"owner", pick("group", l.groups)},
			{"system", pick("system", l.systems)}}
		if l.apis > 0 {
			g.spec = append(g.spec, field{"providesApis", []string{pick("api", l.apis)}},
				field{"consumesApis", []string{pick("api", l.apis), pick("api", l.apis)}})
		}
		var deps []string
		if l.resources > 0 {
			deps = append(deps, "resource:"+pick("resource", l.resources))
		}
		if c > 0 && rng.IntN(4) == 0 {
			deps = append(deps, "component:"+pick("component", c))
		}
		if deps != nil {
			g.spec = append(g.spec, field{"dependsOn", deps})
		}
	}
	g.description = "Synthetic " + strings.ToLower(g.kind) + " " + g.name + ". " + strings.Repeat(loremSentence, 2+rng.IntN(6))
	g.tags = []string{genLangs[rng.IntN(len(genLangs))], "tier-" + strconv.Itoa(rng.IntN(3)+1)}
	g.costCenter = fmt.Sprintf("cc-%03d", rng.IntN(200))
	for _, f := range g.spec {
		if l, ok := f.val.([]string); ok && slices.Contains(sortedSpecLists, f.key) {
			slices.Sort(l)
		}
	}
	slices.SortFunc(g.spec, func(a, b field) int { return strings.Compare(a.key, b.key) })
	return g
}

func fieldsToMap(fs []field) map[string]any {
	m := make(map[string]any, len(fs))
	for _, f := range fs {
		switch v := f.val.(type) {
		case string:
			m[f.key] = v
		case []string:
			l := make([]any, len(v))
			for i, s := range v {
				l[i] = s
			}
			m[f.key] = l
		case []field:
			m[f.key] = fieldsToMap(v)
		}
	}
	return m
}

// entity returns entity i as decoded JSON.
func (l *layout) entity(i int) catalog.Entity {
	g := l.choose(i)
	return catalog.Entity{
		"apiVersion": "backstage.io/v1alpha1",
		"kind":       g.kind,
		"metadata": map[string]any{
			"name":        g.name,
			"title":       strings.ToUpper(g.name[:1]) + g.name[1:],
			"description": g.description,
			"tags":        []any{g.tags[0], g.tags[1]},
			"labels":      map[string]any{"cost-center": g.costCenter},
			"annotations": map[string]any{
				"backstage.io/source-location": "url:https://git.example.com/org/" + g.name + "/",
				"github.com/project-slug":      "org/" + g.name,
			},
			"links": []any{map[string]any{"url": "https://dash.example.com/" + g.name, "title": "Dashboard"}},
		},
		"spec": fieldsToMap(g.spec),
	}
}

// appendFinal appends generated entity i as the catalog serves it, in
// encoding/json's form of the processed entity (keys sorted, default
// namespace) with uid, etag and relations, and returns where the 40 etag
// characters start.
func (l *layout) appendFinal(dst []byte, i int, uid, etag string, rels []rel, gr *graph) ([]byte, int) {
	g := l.choose(i)
	dst = append(dst, `{"apiVersion":"backstage.io/v1alpha1","kind":`...)
	dst = appendJSONString(dst, g.kind)
	dst = append(dst, `,"metadata":{"annotations":{"backstage.io/source-location":`...)
	dst = appendJSONString(dst, "url:https://git.example.com/org/"+g.name+"/")
	dst = append(dst, `,"github.com/project-slug":`...)
	dst = appendJSONString(dst, "org/"+g.name)
	dst = append(dst, `},"description":`...)
	dst = appendJSONString(dst, g.description)
	dst = append(dst, `,"etag":"`...)
	etagOff := len(dst)
	dst = append(dst, etag...)
	dst = append(dst, `","labels":{"cost-center":`...)
	dst = appendJSONString(dst, g.costCenter)
	dst = append(dst, `},"links":[{"title":"Dashboard","url":`...)
	dst = appendJSONString(dst, "https://dash.example.com/"+g.name)
	dst = append(dst, `}],"name":`...)
	dst = appendJSONString(dst, g.name)
	dst = append(dst, `,"namespace":"default","tags":[`...)
	dst = appendJSONString(dst, g.tags[0])
	dst = append(dst, ',')
	dst = appendJSONString(dst, g.tags[1])
	dst = append(dst, `],"title":`...)
	dst = appendJSONString(dst, strings.ToUpper(g.name[:1])+g.name[1:])
	dst = append(dst, `,"uid":`...)
	dst = appendJSONString(dst, uid)
	dst = append(dst, `},"relations":`...)
	dst = appendRelations(dst, rels, gr)
	dst = append(dst, `,"spec":`...)
	dst = appendFields(dst, g.spec)
	return append(dst, '}'), etagOff
}

func appendFields(dst []byte, fs []field) []byte {
	dst = append(dst, '{')
	for k, f := range fs {
		if k > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, f.key)
		dst = append(dst, ':')
		switch v := f.val.(type) {
		case string:
			dst = appendJSONString(dst, v)
		case []string:
			dst = append(dst, '[')
			for j, s := range v {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = appendJSONString(dst, s)
			}
			dst = append(dst, ']')
		case []field:
			dst = appendFields(dst, v)
		}
	}
	return append(dst, '}')
}
