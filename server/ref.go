package server

import (
	"fmt"
	"strings"
)

// defaultNamespace is the namespace Backstage gives entities without one.
const defaultNamespace = "default"

// entityRef is an entity ref of the API contract: `kind:namespace/name`,
// lower-cased as Backstage's stringifyEntityRef produces it.
type entityRef struct{ kind, namespace, name string }

func (r entityRef) String() string { return r.kind + ":" + r.namespace + "/" + r.name }

// parseEntityRef parses a complete ref as the contract requires it: a
// non-empty kind, namespace and name, and no ':' or '/' in the name.
func parseEntityRef(s string) (entityRef, error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok || kind == "" {
		return entityRef{}, fmt.Errorf("entity ref %q is not of the form kind:namespace/name", s)
	}
	ns, name, ok := strings.Cut(rest, "/")
	if !ok || ns == "" || name == "" {
		return entityRef{}, fmt.Errorf("entity ref %q is not of the form kind:namespace/name", s)
	}
	if strings.ContainsAny(name, ":/") {
		return entityRef{}, fmt.Errorf("entity ref %q: name contains ':' or '/'", s)
	}
	return entityRef{kind: strings.ToLower(kind), namespace: strings.ToLower(ns), name: strings.ToLower(name)}, nil
}
