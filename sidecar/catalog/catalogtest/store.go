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
	ref  string
	rec  *record
	rels []rel // relations whose source is this ref
	out  []*node
}

// rel is a relation stored on its source node, with the node whose
// processing emitted it.
type rel struct {
	typ    relType
	target *node
	origin *node
}

// record is one stored entity, kept as its final encoded JSON. Relations and
// etag are spliced into the encoding in place, so re-stitching never decodes.
type record struct {
	node    *node
	uid     string
	kind    string // as written in the entity
	body    []byte // final JSON
	etagOff int    // offset of the 40 etag characters in body
	relOff  int    // offset of the relations array in body
	relLen  int    // its length
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
	kind, _ := e["kind"].(string)
	return &record{uid: uid, kind: kind, body: b, etagOff: etagOff + 1, relOff: relOff, relLen: len(relsPlaceholderJSON)}, nil
}

// stitch writes the node's current relations and the resulting etag into
// the record. It reports whether the stitched output changed.
func (r *record) stitch() bool {
	rels := r.node.rels
	slices.SortFunc(rels, func(a, b rel) int {
		if c := strings.Compare(relNames[a.typ], relNames[b.typ]); c != 0 {
			return c
		}
		return strings.Compare(a.target.ref, b.target.ref)
	})
	var arr bytes.Buffer
	arr.WriteByte('[')
	for i, x := range rels {
		if i > 0 && x.typ == rels[i-1].typ && x.target == rels[i-1].target {
			continue // the same relation emitted by two entities
		}
		if arr.Len() > 1 {
			arr.WriteByte(',')
		}
		arr.WriteString(`{"type":"`)
		arr.WriteString(relNames[x.typ])
		arr.WriteString(`","targetRef":`)
		t, _ := json.Marshal(x.target.ref)
		arr.Write(t)
		arr.WriteByte('}')
	}
	arr.WriteByte(']')
	old := r.body
	nb := make([]byte, 0, len(old)-r.relLen+arr.Len())
	nb = append(nb, old[:r.relOff]...)
	nb = append(nb, arr.Bytes()...)
	nb = append(nb, old[r.relOff+r.relLen:]...)
	h := sha1.New()
	h.Write(nb[:r.etagOff])
	h.Write(nb[r.etagOff+40:])
	sum := hex.EncodeToString(h.Sum(nil))
	changed := sum != string(old[r.etagOff:r.etagOff+40])
	copy(nb[r.etagOff:], sum)
	r.body = nb
	r.relLen = arr.Len()
	return changed
}

func (r *record) etag() string { return string(r.body[r.etagOff : r.etagOff+40]) }
