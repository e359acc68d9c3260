package catalog

import (
	"fmt"
	"strings"

	"github.com/portbridge/portbridge/sidecar/redact"
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
			return Ref{}, fmt.Errorf("entity ref %s: empty kind before ':'", redact.Quote(s))
		}
	}
	ns := DefaultNamespace
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		ns = rest[:i]
		rest = rest[i+1:]
		if ns == "" {
			return Ref{}, fmt.Errorf("entity ref %s: empty namespace before '/'", redact.Quote(s))
		}
	}
	if rest == "" {
		return Ref{}, fmt.Errorf("entity ref %s: empty name", redact.Quote(s))
	}
	if strings.ContainsAny(rest, ":/") {
		return Ref{}, fmt.Errorf("entity ref %s: name contains ':' or '/'", redact.Quote(s))
	}
	if kind == "" {
		return Ref{}, fmt.Errorf("entity ref %s: no kind and none implied", redact.Quote(s))
	}
	return Ref{Kind: strings.ToLower(kind), Namespace: strings.ToLower(ns), Name: strings.ToLower(rest)}, nil
}

// ParseCanonicalRef parses a ref that must be complete: `kind:namespace/name`.
func ParseCanonicalRef(s string) (Ref, error) {
	i := strings.IndexByte(s, ':')
	j := strings.IndexByte(s, '/')
	if i <= 0 || j < i+2 || j == len(s)-1 {
		return Ref{}, fmt.Errorf("entity ref %s is not of the form kind:namespace/name", redact.Quote(s))
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
		return Ref{}, fmt.Errorf("entity of kind %s has no metadata", redact.Quote(kind))
	}
	name, _ := meta["name"].(string)
	if name == "" {
		return Ref{}, fmt.Errorf("entity of kind %s has no metadata.name", redact.Quote(kind))
	}
	ns, _ := meta["namespace"].(string)
	if ns == "" {
		ns = DefaultNamespace
	}
	return ParseRef(kind+":"+ns+"/"+name, "")
}
