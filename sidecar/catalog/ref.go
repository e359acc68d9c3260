package catalog

import (
	"fmt"
	"strings"
)

// Ref is a parsed Backstage entity reference. Fields are lower-cased, as
// Backstage's stringifyEntityRef produces them.
type Ref struct {
	Kind      string
	Namespace string
	Name      string
}

// DefaultNamespace is the namespace Backstage gives entities without one.
const DefaultNamespace = "default"

// String renders the ref in canonical form `kind:namespace/name`.
func (r Ref) String() string {
	return r.Kind + ":" + r.Namespace + "/" + r.Name
}

// ParseRef parses `[kind:][namespace/]name` the way Backstage's parseEntityRef
// does. defaultKind is used when the ref has no kind; an empty defaultKind
// makes a kind mandatory. The result is lower-cased.
func ParseRef(s, defaultKind string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("entity ref is empty")
	}
	rest := s
	kind := defaultKind
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		kind = rest[:i]
		rest = rest[i+1:]
		if kind == "" {
			return Ref{}, fmt.Errorf("entity ref %q: empty kind before ':'", s)
		}
	}
	ns := DefaultNamespace
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		ns = rest[:i]
		rest = rest[i+1:]
		if ns == "" {
			return Ref{}, fmt.Errorf("entity ref %q: empty namespace before '/'", s)
		}
	}
	if rest == "" {
		return Ref{}, fmt.Errorf("entity ref %q: empty name", s)
	}
	if strings.ContainsAny(rest, ":/") {
		return Ref{}, fmt.Errorf("entity ref %q: name contains ':' or '/'", s)
	}
	if kind == "" {
		return Ref{}, fmt.Errorf("entity ref %q: no kind and none implied", s)
	}
	return Ref{Kind: strings.ToLower(kind), Namespace: strings.ToLower(ns), Name: strings.ToLower(rest)}, nil
}

// ParseCanonicalRef parses a ref that must be complete: `kind:namespace/name`.
func ParseCanonicalRef(s string) (Ref, error) {
	i := strings.IndexByte(s, ':')
	j := strings.IndexByte(s, '/')
	if i <= 0 || j < i+2 || j == len(s)-1 {
		return Ref{}, fmt.Errorf("entity ref %q is not of the form kind:namespace/name", s)
	}
	return ParseRef(s, "")
}

// RefOf returns the ref of an entity object (as decoded from the catalog
// API): its kind, metadata.namespace (default "default") and metadata.name.
func RefOf(entity map[string]any) (Ref, error) {
	kind, _ := entity["kind"].(string)
	if kind == "" {
		return Ref{}, fmt.Errorf("entity has no kind")
	}
	meta, _ := entity["metadata"].(map[string]any)
	if meta == nil {
		return Ref{}, fmt.Errorf("entity of kind %q has no metadata", kind)
	}
	name, _ := meta["name"].(string)
	if name == "" {
		return Ref{}, fmt.Errorf("entity of kind %q has no metadata.name", kind)
	}
	ns, _ := meta["namespace"].(string)
	if ns == "" {
		ns = DefaultNamespace
	}
	return ParseRef(kind+":"+ns+"/"+name, "")
}
