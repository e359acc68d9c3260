package porttest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestBody packs and unpacks bodies: what goes in comes out, packed when
// that is smaller.
func TestBody(t *testing.T) {
	t.Parallel()
	sample := newBody(`{"description":"Synthetic component c-1. Lorem ipsum dolor sit amet.","lifecycle":"production","tags":["go","tier-1"]}`,
		`{"owningGroup":"group:default/g-1","system":"system:default/s-1"}`)
	big := `{"definition":"` + strings.Repeat("openapi: 3.0.0\\npaths: {}\\n", 2000) + `"}`
	for _, c := range []struct {
		name        string
		props, rels jsonObject
		packed      bool
	}{
		{"empty", "", "", false},
		{"tiny", `{"a":1}`, "", false},
		{"relations only", "", `{"system":"system:default/s-2"}`, true},
		{"like the dictionary", `{"description":"Synthetic component c-2. Lorem ipsum dolor sit amet.","lifecycle":"experimental","tags":["go","tier-2"]}`,
			`{"owningGroup":"group:default/g-2","system":"system:default/s-2"}`, true},
		{"unlike it", jsonObject(`{"x":"` + strings.Repeat("\u00e9\u2028z", 40) + `","n":[1.5e300,-0,null,true]}`), `{}`, true},
		{"bigger than a window", jsonObject(big), `{"r":"x"}`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, dict := range []string{sample.s, strings.Repeat(sample.s, 400)} { // the second is cut to flate's window
				codec := newCodec(dict)
				b := newBody(c.props, c.rels)
				for range 3 { // the pooled writer and reader are reused
					p := codec.pack(b)
					if (p.c != nil) != c.packed {
						t.Fatalf("packed %v (%d bytes from %d), want %v", p.c != nil, len(p.s), len(b.s), c.packed)
					}
					if p.c != nil && len(p.s) >= len(b.s) {
						t.Fatalf("packed to %d bytes from %d", len(p.s), len(b.s))
					}
					if again := codec.pack(p); again != p {
						t.Fatal("packing a packed body changed it")
					}
					props, rels := p.objects()
					if props != c.props || rels != c.rels || p.properties() != c.props || p.relations() != c.rels {
						t.Fatalf("unpacked %.80q / %.80q, want %.80q / %.80q", props, rels, c.props, c.rels)
					}
				}
			}
		})
	}
}

// TestBodyConcurrentUnpacking unpacks bodies of one codec from several
// goroutines (run with -race).
func TestBodyConcurrentUnpacking(t *testing.T) {
	t.Parallel()
	codec := newCodec(newBody(`{"description":"a fairly long description of an entity, long enough to be a dictionary"}`, `{"system":"s"}`).s)
	bodies := make([]body, 50)
	want := make([]jsonObject, len(bodies))
	for i := range bodies {
		want[i] = jsonObject(fmt.Sprintf(`{"description":"a fairly long description of entity %d, long enough to pack"}`, i))
		bodies[i] = codec.pack(newBody(want[i], `{"system":"s"}`))
		if bodies[i].c == nil {
			t.Fatalf("body %d was not packed", i)
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for k := range 200 {
				i := (g*31 + k) % len(bodies)
				if got := bodies[i].properties(); got != want[i] {
					t.Errorf("body %d: %q", i, got)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestUvarint reads the length prefixes of bodies.
func TestUvarint(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		v    uint64
		size int
	}{
		{"", 0, 0}, {"\x00", 0, 1}, {"\x7f", 127, 1}, {"\x80\x01x", 128, 2}, {"\xff\xff\x03", 65535, 3}, {"\x80\x80", 0, 0},
	} {
		if v, n := uvarint(c.in); v != c.v || n != c.size {
			t.Errorf("uvarint(%q) = %d, %d; want %d, %d", c.in, v, n, c.v, c.size)
		}
	}
}
