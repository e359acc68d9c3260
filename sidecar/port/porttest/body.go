package porttest

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"sync"
	"unsafe"
)

// body is an entity's properties and relations: the length of the
// properties' encoding (uvarint), then the properties' and the relations'
// encodings, as one string. Stored records have it deflated by their
// blueprint's codec (c set; then the string is the length of the plain
// form, uvarint, and the deflated bytes). The zero body is two empty
// objects.
type body struct {
	s string
	c *codec
}

// newBody returns the plain body of two encoded objects.
func newBody(props, rels jsonObject) body {
	if props == "" && rels == "" {
		return body{}
	}
	n := binary.AppendUvarint(nil, uint64(len(props)))
	var sb strings.Builder
	sb.Grow(len(n) + len(props) + len(rels))
	sb.Write(n)
	sb.WriteString(string(props))
	sb.WriteString(string(rels))
	return body{s: sb.String()}
}

// objects returns the properties' and the relations' encodings.
func (b body) objects() (props, rels jsonObject) {
	s := b.s
	if b.c != nil {
		s = b.c.inflate(s)
	}
	if s == "" {
		return "", ""
	}
	n, k := uvarint(s)
	if k <= 0 || uint64(len(s)-k) < n {
		panic(fmt.Sprintf("porttest: a stored entity body is corrupt (%d bytes)", len(s)))
	}
	return jsonObject(s[k : k+int(n)]), jsonObject(s[k+int(n):])
}

func (b body) properties() jsonObject { p, _ := b.objects(); return p }
func (b body) relations() jsonObject  { _, r := b.objects(); return r }

// codec deflates the bodies of one blueprint's entities against a
// dictionary: the plain body of the first entity stored with at least
// codecMinDict bytes of it. Entities of a blueprint repeat their keys and
// much of their values, so that against it a body of a generated catalog
// shrinks six- to eightfold; packing one takes about ten microseconds
// (resetting flate's hash tables), unpacking one or two. Writers (large)
// and readers are pooled, and so let go of when idle; the pools make it
// safe for concurrent use.
type codec struct {
	dict    []byte
	writers sync.Pool // *flate.Writer
	readers sync.Pool // flate reader (io.ReadCloser and flate.Resetter)
}

const (
	codecMinDict = 128
	codecMaxDict = 32 << 10 // flate's window: it uses no more of a dictionary
	codecLevel   = 2        // as small as the slower levels for bodies, and the fastest that uses the dictionary well
)

func newCodec(dict string) *codec {
	return &codec{dict: []byte(dict[max(0, len(dict)-codecMaxDict):])}
}

// pack returns b deflated, or b when that is not smaller.
func (c *codec) pack(b body) body {
	if b.c != nil || len(b.s) < 16 {
		return b
	}
	w, _ := c.writers.Get().(*flate.Writer)
	var buf bytes.Buffer
	buf.Grow(len(b.s)/2 + 16)
	buf.Write(binary.AppendUvarint(nil, uint64(len(b.s))))
	if w == nil {
		var err error
		if w, err = flate.NewWriterDict(&buf, codecLevel, c.dict); err != nil {
			panic(fmt.Sprintf("porttest: %v", err)) // only for a bad level
		}
	} else {
		w.Reset(&buf)
	}
	// Writes to a bytes.Buffer do not fail.
	_, _ = io.WriteString(w, b.s)
	_ = w.Close()
	c.writers.Put(w)
	if buf.Len() >= len(b.s) {
		return b
	}
	return body{s: buf.String(), c: c}
}

// inflate returns the plain form of a packed string.
func (c *codec) inflate(s string) string {
	n, k := uvarint(s)
	if k <= 0 {
		panic(fmt.Sprintf("porttest: a packed entity body is corrupt (%d bytes)", len(s)))
	}
	src := strings.NewReader(s[k:])
	r, _ := c.readers.Get().(io.ReadCloser)
	if r == nil {
		r = flate.NewReaderDict(src, c.dict)
	} else if err := r.(flate.Resetter).Reset(src, c.dict); err != nil {
		panic(fmt.Sprintf("porttest: %v", err)) // Reset does not fail
	}
	out := make([]byte, n)
	if _, err := io.ReadFull(r, out); err != nil {
		panic(fmt.Sprintf("porttest: inflating a packed entity body of %d bytes: %v", len(s), err))
	}
	c.readers.Put(r)
	// out is not written again: the string may share its bytes.
	return unsafe.String(unsafe.SliceData(out), len(out))
}

// uvarint decodes the uvarint at the start of s: the value and its length
// (0 when s does not start with one).
func uvarint(s string) (uint64, int) {
	var x uint64
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			return x | uint64(c)<<(7*i), i + 1
		}
		x |= uint64(c&0x7f) << (7 * i)
	}
	return 0, 0
}
