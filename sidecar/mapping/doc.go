// Package mapping turns Backstage catalog entities into Port entities with
// mappings in Port's own port-app-config format, evaluated with gojq.
//
// Load parses a port-app-config document unchanged (unknown keys are errors
// with file, line and column); New compiles each resource into one jq
// program (selector plus every field), so an entity costs one gojq run per
// matching resource; Map returns canonical Port entities with their hash,
// field warnings and skip reasons. DefaultConfig and DefaultBlueprints are
// the embedded corrected defaults; EnsureBlueprints creates the missing ones.
//
// Semantics follow Port's Ocean integration: metadata.identifier is added as
// lower(kind:namespace/name) first; the selector must yield a boolean; each
// field takes the first jq output; a failing field becomes null with a
// warning; a null or empty identifier or blueprint skips the entity; single
// quotes around jq strings are accepted. Deviations, each deliberate:
//
//   - A relation declared many:true in the blueprint collects every output
//     into an array (Ocean keeps only the first, so e.g. providesApis lists
//     one API). Array outputs are spliced in, nulls dropped, duplicates
//     removed. With a blueprint only known per entity (a jq expression), all
//     outputs are collected and the first is kept for single relations.
//   - Relation targets must be valid Port identifiers; a target that is not,
//     or that ends in "/" or ":" (a ref with an empty part such as
//     "system:default/"), is dropped with a warning instead of making Port
//     create a bogus placeholder entity.
//   - A string mapped to a blueprint property of type object is parsed as
//     JSON or YAML (API definitions); if it is not an object the property is
//     null with a warning.
//   - $ENV and env are empty unless Options.AllowEnv (Ocean allows them by
//     default): a mapping must not copy the sidecar's secrets into Port.
//   - Each entity has a time limit (Options.Timeout) and its mapped JSON a
//     size limit (Options.MaxOutputBytes); input and inputs are unavailable.
//   - A resource with kind "*" takes every kind that no other resource names
//     (the default mapping uses it for custom kinds).
//   - Identifiers must match Port's rules before anything is sent; an entity
//     whose identifier does not is skipped with the reason.
//
// jq 1.6 and gojq agree on everything the differential tests compare except
// error message texts and the key order of tojson (jq keeps insertion order,
// gojq sorts); see jq_test.go.
package mapping
