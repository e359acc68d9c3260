package catalogtest

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/portbridge/portbridge/sidecar/catalog"
)

// node is one entity ref in the relation graph. It exists while an entity
// has this ref or while some entity emits relations whose source is it (a
// dangling target keeps its incoming relations for when it appears).
type node struct {
	g    *graph
	id   nodeID
	ref  string
	rec  *record
	rels []rel    // relations whose source is this ref
	out  []nodeID // nodes this node's entity emitted relations on
}

// nodeID names a node in its graph.
type nodeID int32

// graph holds the nodes by id, so that relations name their nodes by index:
// relation lists then hold no pointers, and the garbage collector does not
// scan them (a million entities hold about ten million relations).
type graph struct {
	byID []*node // nil for a forgotten node; ids are not reused
}

func (g *graph) ref(id nodeID) string { return g.byID[id].ref }

// rel is a relation stored on its source node, with the node whose
// processing emitted it.
type rel struct {
	typ    relType
	target nodeID
	origin nodeID
}

// record is one entity: either stored as its final encoded JSON (relations
// and etag are spliced into the encoding in place, so re-stitching never
// decodes), or generated (gen != nil): rendered from its index on demand,
// with only its etag kept, so a million generated entities hold no JSON.
type record struct {
	node *node
	uid  string

	ident   *identity // stored: as written in the entity
	body    []byte    // stored: final JSON
	etagOff int32     // offset of the 40 etag characters in body
	relOff  int32     // offset of the relations array in body
	relLen  int32     // its length

	index int32    // generated: its index in gen
	gen   *layout  // generated: the catalog it belongs to
	sum   [20]byte // generated: the etag (sha1) of its current stitched output
}

// identity is what projections of kind, namespace and name answer without
// the body, as written in the entity.
type identity struct {
	apiVersion, kind, namespace, name string
}

// identity returns the record's identity; a generated record's comes from
// its index.
func (r *record) identity() identity {
	if r.gen != nil {
		kind, name := r.gen.kindAndName(int(r.index))
		return identity{apiVersion: "backstage.io/v1alpha1", kind: kind, namespace: catalog.DefaultNamespace, name: name}
	}
	return *r.ident
}

// Placeholders written while encoding an entity, replaced by splicing.
const (
	etagPlaceholder = "pbetag-placeholder-pbetag-placeholder-00" // 40 characters, like a sha1 hex
	relsPlaceholder = "\x00pb-relations\x00"
)

var relsPlaceholderJSON = []byte(`"\u0000pb-relations\u0000"`)

// encodeRecord encodes a processed entity with uid and placeholders and finds
// the splice offsets.
func encodeRecord(e catalog.Entity, uid string) (*record, error) {
	meta := e["metadata"].(map[string]any)
	meta["uid"] = uid
	meta["etag"] = etagPlaceholder
	e["relations"] = relsPlaceholder
	b, err := json.Marshal(e)
	delete(e, "relations")
	delete(meta, "etag")
	delete(meta, "uid")
	if err != nil {
		return nil, fmt.Errorf("encode entity: %w", err)
	}
	etagOff := bytes.Index(b, []byte(`"`+etagPlaceholder+`"`))
	relOff := bytes.Index(b, relsPlaceholderJSON)
	if etagOff < 0 || relOff < 0 || etagOff > relOff {
		return nil, fmt.Errorf("encode entity: placeholders not found")
	}
	return &record{uid: uid, body: b, etagOff: int32(etagOff + 1), relOff: int32(relOff), relLen: int32(len(relsPlaceholderJSON))}, nil
}

// sortRelations orders a node's relations by type and target, as Backstage
// returns them.
func sortRelations(rels []rel, g *graph) {
	slices.SortFunc(rels, func(a, b rel) int {
		if c := strings.Compare(relNames[a.typ], relNames[b.typ]); c != 0 {
			return c
		}
		return strings.Compare(g.ref(a.target), g.ref(b.target))
	})
}

// appendRelations appends the JSON array of sorted relations, without
// duplicates (the same relation emitted by two entities).
func appendRelations(dst []byte, rels []rel, g *graph) []byte {
	dst = append(dst, '[')
	first := true
	for i, x := range rels {
		if i > 0 && x.typ == rels[i-1].typ && x.target == rels[i-1].target {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, `{"type":"`...)
		dst = append(dst, relNames[x.typ]...)
		dst = append(dst, `","targetRef":`...)
		dst = appendJSONString(dst, g.ref(x.target))
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// plainJSON marks the bytes encoding/json writes as they are in a string.
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendJSONString appends s as a JSON string, as encoding/json writes it.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !plainJSON[s[i]] {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// spliced returns body with the relations array replaced by rels and the
// etag by etag (when not empty), and the new relations length.
func spliced(body []byte, relOff, relLen, etagOff int, rels []rel, g *graph, etag string) ([]byte, int) {
	nb := make([]byte, 0, len(body)-relLen+64*len(rels)+2)
	nb = append(nb, body[:relOff]...)
	nb = appendRelations(nb, rels, g)
	n := len(nb) - relOff
	nb = append(nb, body[relOff+relLen:]...)
	if etag != "" {
		copy(nb[etagOff:], etag)
	}
	return nb, n
}

// etagSum is the sha1 of a final body without its etag characters.
func etagSum(body []byte, etagOff int) (sum [20]byte) {
	h := sha1.New()
	h.Write(body[:etagOff])
	h.Write(body[etagOff+40:])
	h.Sum(sum[:0])
	return sum
}

// etagOf is etagSum in hex, as the entity carries it.
func etagOf(body []byte, etagOff int) string {
	s := etagSum(body, etagOff)
	return hex.EncodeToString(s[:])
}

// stitch writes the node's current relations and the resulting etag into
// the record. It reports whether the stitched output changed.
func (r *record) stitch() bool {
	n := r.node
	sortRelations(n.rels, n.g)
	if r.gen != nil {
		body, off := r.gen.appendFinal(make([]byte, 0, 2048), int(r.index), r.uid, etagPlaceholder, n.rels, n.g)
		sum := etagSum(body, off)
		changed := sum != r.sum
		r.sum = sum
		return changed
	}
	nb, l := spliced(r.body, int(r.relOff), int(r.relLen), int(r.etagOff), n.rels, n.g, "")
	sum := etagOf(nb, int(r.etagOff))
	changed := sum != string(r.body[r.etagOff:r.etagOff+40])
	copy(nb[r.etagOff:], sum)
	r.body, r.relLen = nb, int32(l)
	return changed
}

// final returns the stitched entity's JSON. The relations of a generated
// record's node must be sorted (stitch does that).
func (r *record) final() []byte {
	if r.gen == nil {
		return r.body
	}
	return r.appendFinal(make([]byte, 0, 2048))
}

// appendFinal appends the stitched entity's JSON to dst.
func (r *record) appendFinal(dst []byte) []byte {
	if r.gen == nil {
		return append(dst, r.body...)
	}
	b, _ := r.gen.appendFinal(dst, int(r.index), r.uid, r.etag(), r.node.rels, r.node.g)
	return b
}

func (r *record) etag() string {
	if r.gen != nil {
		return hex.EncodeToString(r.sum[:])
	}
	return string(r.body[r.etagOff : r.etagOff+40])
}
