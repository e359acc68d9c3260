package catalogtest

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/portbridge/portbridge/sidecar/catalog"
)

// relType is a relation type, an index into relNames.
type relType uint8

const (
	relOwnedBy relType = iota
	relOwnerOf
	relPartOf
	relHasPart
	relProvidesAPI
	relAPIProvidedBy
	relConsumesAPI
	relAPIConsumedBy
	relDependsOn
	relDependencyOf
	relMemberOf
	relHasMember
	relParentOf
	relChildOf
)

var relNames = [...]string{
	relOwnedBy: "ownedBy", relOwnerOf: "ownerOf", relPartOf: "partOf", relHasPart: "hasPart",
	relProvidesAPI: "providesApi", relAPIProvidedBy: "apiProvidedBy",
	relConsumesAPI: "consumesApi", relAPIConsumedBy: "apiConsumedBy",
	relDependsOn: "dependsOn", relDependencyOf: "dependencyOf",
	relMemberOf: "memberOf", relHasMember: "hasMember",
	relParentOf: "parentOf", relChildOf: "childOf",
}

// relRule is one row of Backstage's BuiltinKindsEntityProcessor: a spec field
// of some kinds emits forward on the entity and reverse on the target.
type relRule struct {
	kinds       []string // lower-case kinds the rule applies to
	field       string   // spec field
	list        bool     // the field is a list of refs
	defaultKind string   // "" means the ref must name its kind
	forward     relType
	reverse     relType
}

var relRules = []relRule{
	{[]string{"component", "api", "resource", "system", "domain", "template"}, "owner", false, "Group", relOwnedBy, relOwnerOf},
	{[]string{"component"}, "subcomponentOf", false, "Component", relPartOf, relHasPart},
	{[]string{"component", "api", "resource"}, "system", false, "System", relPartOf, relHasPart},
	{[]string{"system"}, "domain", false, "Domain", relPartOf, relHasPart},
	{[]string{"domain"}, "subdomainOf", false, "Domain", relPartOf, relHasPart},
	{[]string{"component"}, "providesApis", true, "API", relProvidesAPI, relAPIProvidedBy},
	{[]string{"component"}, "consumesApis", true, "API", relConsumesAPI, relAPIConsumedBy},
	{[]string{"component", "resource"}, "dependsOn", true, "", relDependsOn, relDependencyOf},
	{[]string{"component", "resource"}, "dependencyOf", true, "", relDependencyOf, relDependsOn},
	{[]string{"user"}, "memberOf", true, "Group", relMemberOf, relHasMember},
	{[]string{"group"}, "parent", false, "Group", relChildOf, relParentOf},
	{[]string{"group"}, "children", true, "Group", relParentOf, relChildOf},
	{[]string{"group"}, "members", true, "User", relHasMember, relMemberOf},
}

// requiredSpec lists, per lower-case kind, the spec fields Backstage's kind
// schemas require, and whether each is a string ("s") or a list ("l").
var requiredSpec = map[string]map[string]string{
	"component": {"type": "s", "lifecycle": "s", "owner": "s"},
	"api":       {"type": "s", "lifecycle": "s", "owner": "s", "definition": "s"},
	"resource":  {"type": "s", "owner": "s"},
	"system":    {"owner": "s"},
	"domain":    {"owner": "s"},
	"group":     {"type": "s", "children": "l"},
	"user":      {"memberOf": "l"},
	"location":  {},
	"template":  {"type": "s"},
}

var (
	kindRE      = regexp.MustCompile(`^[a-zA-Z][a-z0-9A-Z]*$`)
	nameRE      = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	namespaceRE = regexp.MustCompile(`^[a-z0-9]+(?:-[a-z0-9]+)*$`)
)

// edge is one relation a processed entity emits: from source to target.
type edge struct {
	source, target string // canonical lower-case refs
	typ            relType
}

// process validates an entity the way Backstage's processing does, applies
// the default namespace, drops server-owned fields and returns its
// canonical ref and the relations it emits (both directions).
func process(e catalog.Entity) (catalog.Ref, []edge, error) {
	ref, err := normalize(e)
	if err != nil {
		return ref, nil, err
	}
	edges, err := edgesOf(ref, e)
	return ref, edges, err
}

// normalize validates an entity, applies the default namespace, sorts the
// lists Backstage sorts and drops server-owned fields.
func normalize(e catalog.Entity) (catalog.Ref, error) {
	apiVersion, _ := e["apiVersion"].(string)
	kind, _ := e["kind"].(string)
	meta, _ := e["metadata"].(map[string]any)
	if meta == nil {
		return catalog.Ref{}, fmt.Errorf("entity of kind %q has no metadata", kind)
	}
	name, _ := meta["name"].(string)
	if name == "" {
		return catalog.Ref{}, fmt.Errorf("entity of kind %q has no metadata.name", kind)
	}
	if apiVersion == "" || kind == "" {
		return catalog.Ref{}, fmt.Errorf("entity %q: apiVersion and kind are required", name)
	}
	if !kindRE.MatchString(kind) || len(kind) > 63 {
		return catalog.Ref{}, fmt.Errorf("entity %q: kind %q is not valid", name, kind)
	}
	if !nameRE.MatchString(name) || len(name) > 63 {
		return catalog.Ref{}, fmt.Errorf("entity %s:%s: metadata.name is not valid", kind, name)
	}
	ns, hasNS := meta["namespace"].(string)
	if !hasNS || ns == "" {
		if v, present := meta["namespace"]; present && v != "" {
			return catalog.Ref{}, fmt.Errorf("entity %s:%s: metadata.namespace must be a string", kind, name)
		}
		ns = catalog.DefaultNamespace
		meta["namespace"] = ns
	}
	if !namespaceRE.MatchString(ns) || len(ns) > 63 {
		return catalog.Ref{}, fmt.Errorf("entity %s:%s/%s: metadata.namespace is not valid", kind, ns, name)
	}
	delete(meta, "uid")
	delete(meta, "etag")
	delete(meta, "generation")
	delete(e, "relations")
	delete(e, "status")
	ref := catalog.Ref{Kind: strings.ToLower(kind), Namespace: strings.ToLower(ns), Name: strings.ToLower(name)}
	req, known := requiredSpec[ref.Kind]
	if !known {
		return ref, fmt.Errorf("entity %s: kind %q is not one of Backstage's built-in kinds", ref, kind)
	}
	spec, _ := e["spec"].(map[string]any)
	if spec == nil && len(req) > 0 {
		return ref, fmt.Errorf("entity %s: spec is required", ref)
	}
	for field, typ := range req {
		v, ok := spec[field]
		switch typ {
		case "s":
			s, isStr := v.(string)
			ok = ok && isStr && s != ""
		case "l":
			_, ok = v.([]any)
		}
		if !ok {
			return ref, fmt.Errorf("entity %s: spec.%s is required and must be a %s", ref, field, map[string]string{"s": "non-empty string", "l": "list"}[typ])
		}
	}
	// BuiltinKindsEntityProcessor.preProcessEntity sorts these lists
	for _, f := range sortedSpecLists {
		if l, ok := spec[f].([]any); ok && allStrings(l) {
			slices.SortFunc(l, func(a, b any) int { return strings.Compare(a.(string), b.(string)) })
		}
	}
	return ref, nil
}

// edgesOf returns the relations a normalized entity emits (both directions).
func edgesOf(ref catalog.Ref, e catalog.Entity) ([]edge, error) {
	spec, _ := e["spec"].(map[string]any)
	var edges []edge
	self := ref.String()
	for _, rule := range relRules {
		if !contains(rule.kinds, ref.Kind) {
			continue
		}
		v, ok := spec[rule.field]
		if !ok || v == nil {
			continue
		}
		var targets []any
		if rule.list {
			l, isList := v.([]any)
			if !isList {
				return nil, fmt.Errorf("entity %s: spec.%s must be a list of entity refs", ref, rule.field)
			}
			targets = l
		} else {
			targets = []any{v}
		}
		for _, t := range targets {
			s, isStr := t.(string)
			if !isStr {
				return nil, fmt.Errorf("entity %s: spec.%s holds %v, not an entity ref", ref, rule.field, t)
			}
			target, err := parseRelTarget(s, rule.defaultKind, ref.Namespace)
			if err != nil {
				return nil, fmt.Errorf("entity %s: spec.%s: %w", ref, rule.field, err)
			}
			edges = append(edges, edge{self, target, rule.forward}, edge{target, self, rule.reverse})
		}
	}
	return edges, nil
}

// parseRelTarget parses a relation target with a default kind and the
// entity's own namespace as context, as Backstage's processor does.
func parseRelTarget(s, defaultKind, namespace string) (string, error) {
	r, err := catalog.ParseRef(s, defaultKind)
	if err != nil {
		return "", err
	}
	if !strings.Contains(s[strings.IndexByte(s, ':')+1:], "/") {
		r.Namespace = strings.ToLower(namespace)
	}
	return r.String(), nil
}

var sortedSpecLists = []string{"providesApis", "consumesApis", "dependsOn", "dependencyOf", "memberOf", "children", "members"}

func allStrings(l []any) bool {
	for _, v := range l {
		if _, ok := v.(string); !ok {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
