package porttest

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/portbridge/portbridge/sidecar/port"
)

// rawAnswer sends a request in-process and returns the status and the
// answer's bytes.
func rawAnswer(t *testing.T, e *Emulator, tok, method, target, body string) (int, []byte) {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("User-Agent", "compact/1")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// encodedEntity is an entity of an answer with its properties and
// relations as the bytes the answer carries.
type encodedEntity struct {
	Identifier string          `json:"identifier"`
	Properties json.RawMessage `json:"properties"`
	Relations  json.RawMessage `json:"relations"`
}

// marshalled is what encoding/json writes for a decoded JSON object: what
// the emulator answered when it kept properties and relations decoded.
func marshalled(t *testing.T, m map[string]any) string {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func decodeObject(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAnswersCarryTheEncodedObjects checks that every route that returns
// entities answers properties and relations with the bytes encoding/json
// gives for the decoded objects (keys sorted, HTML and line separators
// escaped, numbers in Go's shortest form), whole or projected, from a
// stored (packed) entity.
func TestAnswersCarryTheEncodedObjects(t *testing.T) {
	t.Parallel()
	e := contractFixture(t)
	tok := token(t, e)
	props := `{"meta":{"z":[1,"x",null,true,{"b":2,"a":1}],"a":0.1,"big":12345678901234567890,"e":1e21,"neg":-0,` +
		`"html":"<a href=\"x\">&</a>","u":"\u2028é😀\ud83d\ude00 \u0007","empty":{},"list":[]},"tags":["b","a"],"port":8080.0,"language":"Go","enabled":false}`
	rels := `{"system":"sys1","deps":["svc1","svc2","svc1"]}`
	status, body := rawAnswer(t, e, tok, "POST", "/v1/blueprints/service/entities",
		`{"identifier":"enc","title":"E","properties":`+props+`,"relations":`+rels+`}`)
	if status != 201 {
		t.Fatalf("create: %d %s", status, body)
	}
	e.mu.RLock()
	packed := e.st.blueprints["service"].entities["enc"].body.c != nil
	e.mu.RUnlock()
	if !packed {
		t.Fatal("the entity is stored unpacked: the answers below would not cover unpacking")
	}
	wantProps := decodeObject(t, props)
	wantRels := decodeObject(t, rels)
	withDefault := maps.Clone(wantProps)
	withDefault["lifecycle"] = "production" // the blueprint's default, set on creation
	var created struct{ Entity encodedEntity }
	if err := json.Unmarshal(body, &created); err != nil || string(created.Entity.Properties) != marshalled(t, withDefault) {
		t.Fatalf("create answered properties %s (%v), want %s", created.Entity.Properties, err, marshalled(t, withDefault))
	}
	whole := [2]string{marshalled(t, wantProps), marshalled(t, wantRels)}
	only := func(keys ...string) string {
		m := map[string]any{}
		for _, k := range keys {
			m[k] = wantProps[k]
		}
		return marshalled(t, m)
	}
	without := func(key string) string {
		m := maps.Clone(wantProps)
		delete(m, key)
		return marshalled(t, m)
	}
	pick := func(t *testing.T, list []encodedEntity) encodedEntity {
		t.Helper()
		for _, x := range list {
			if x.Identifier == "enc" {
				return x
			}
		}
		t.Fatalf("entity enc is not in the answer")
		return encodedEntity{}
	}
	one := func(t *testing.T, b []byte) encodedEntity {
		var out struct{ Entity encodedEntity }
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out.Entity
	}
	list := func(t *testing.T, b []byte) encodedEntity {
		var out struct{ Entities []encodedEntity }
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return pick(t, out.Entities)
	}
	dump := func(t *testing.T, b []byte) encodedEntity {
		var out struct{ Entities map[string][]encodedEntity }
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return pick(t, out.Entities["service"])
	}
	for _, c := range []struct {
		name, method, target, body string
		get                        func(*testing.T, []byte) encodedEntity
		props, rels                string // "" for absent
	}{
		{"replace", "POST", "/v1/blueprints/service/entities?upsert=true", `{"identifier":"enc","title":"E","properties":` + props + `,"relations":` + rels + `}`, one, whole[0], whole[1]},
		{"merge", "POST", "/v1/blueprints/service/entities?upsert=true&merge=true", `{"identifier":"enc"}`, one, whole[0], whole[1]},
		{"patch", "PATCH", "/v1/blueprints/service/entities/enc", `{"title":"E2"}`, one, whole[0], whole[1]},
		{"get", "GET", "/v1/blueprints/service/entities/enc", "", one, whole[0], whole[1]},
		{"get include", "GET", "/v1/blueprints/service/entities/enc?include=properties.meta&include=properties.port&include=relations", "", one, only("meta", "port"), whole[1]},
		{"get exclude", "GET", "/v1/blueprints/service/entities/enc?exclude=properties.port&exclude=relations", "", one, without("port"), ""},
		{"list", "GET", "/v1/blueprints/service/entities", "", list, whole[0], whole[1]},
		{"search", "POST", "/v1/blueprints/service/entities/search", `{"query":{"combinator":"and","rules":[{"property":"meta","operator":"isNotEmpty"}]}}`, list, whole[0], whole[1]},
		{"search include", "POST", "/v1/blueprints/service/entities/search", `{"include":["$identifier","tags","deps"]}`, list, only("tags"), `{"deps":["svc1","svc2","svc1"]}`},
		{"search all", "POST", "/v1/entities/search", `{"combinator":"and","rules":[{"property":"$identifier","operator":"=","value":"enc"}]}`, list, whole[0], whole[1]},
		{"datasource listing", "POST", "/v1/blueprints/entities/datasource-entities", `{"datasource_prefix":"compact/"}`, list, whole[0], whole[1]},
		{"dump", "GET", "/_emulator/dump", "", dump, whole[0], whole[1]},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := rawAnswer(t, e, tok, c.method, c.target, c.body)
			if status != 200 {
				t.Fatalf("%d %s", status, body)
			}
			got := c.get(t, body)
			if string(got.Properties) != c.props {
				t.Errorf("properties:\n got %s\nwant %s", got.Properties, c.props)
			}
			if string(got.Relations) != c.rels {
				t.Errorf("relations:\n got %s\nwant %s", got.Relations, c.rels)
			}
		})
	}
}

// TestManyDependents points n entities at one (twice each, through a
// many-valued relation, and once through a required one) and checks that
// renaming it, deleting it and deleting what they require reach every one
// of them, below and beyond the reverse index's short list, and that the
// index forgets them.
func TestManyDependents(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, inSetListMax/2 - 1, inSetListMax / 2, inSetListMax/2 + 1, inSetListMax + 1, 80} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			e := contractFixture(t)
			tok := token(t, e)
			put := func(bp string, ent port.Entity) {
				t.Helper()
				if _, err := e.PutEntity(bp, ent, "test", false); err != nil {
					t.Fatal(err)
				}
			}
			put("system", port.Entity{Identifier: "hubsys"})
			put("service", port.Entity{Identifier: "hub"})
			for i := range n {
				put("service", port.Entity{Identifier: fmt.Sprintf("src-%d", i),
					Relations: map[string]any{"deps": []any{"hub", "svc1", "hub"}, "system": "hubsys"}})
				put("component", port.Entity{Identifier: fmt.Sprintf("comp-%d", i), Relations: map[string]any{"system_req": "hubsys"}})
			}
			eachSource := func(check func(port.Entity) error) {
				t.Helper()
				for i := range n {
					r, ok := e.Entity("service", fmt.Sprintf("src-%d", i))
					if !ok {
						t.Fatalf("src-%d is gone", i)
					}
					if err := check(r.Entity); err != nil {
						t.Fatalf("src-%d: %v (relations %v)", i, err, r.Entity.Relations)
					}
				}
			}
			depsAre := func(want ...any) func(port.Entity) error {
				return func(ent port.Entity) error {
					if got, _ := ent.Relations["deps"].([]any); !slices.Equal(got, want) {
						return fmt.Errorf("deps %v, want %v", got, want)
					}
					return nil
				}
			}

			if st, out, _ := do(t, e, tok, "PATCH", "/v1/blueprints/service/entities/hub", `{"identifier":"hub2"}`); st != 200 {
				t.Fatalf("rename: %d %v", st, out)
			}
			eachSource(depsAre("hub2", "svc1", "hub2"))
			if st, out, _ := do(t, e, tok, "DELETE", "/v1/blueprints/service/entities/hub2", ""); st != 200 {
				t.Fatalf("delete the target of optional relations: %d %v", st, out)
			}
			eachSource(depsAre("svc1"))

			if st, out, _ := do(t, e, tok, "DELETE", "/v1/blueprints/system/entities/hubsys", ""); st != 403 || out["error"] != "has_dependents" {
				t.Fatalf("delete the target of %d required relations: %d %v, want 403 has_dependents", n, st, out)
			}
			if st, out, _ := do(t, e, tok, "DELETE", "/v1/blueprints/system/entities/hubsys?delete_dependents=true", ""); st != 200 {
				t.Fatalf("delete with its dependents: %d %v", st, out)
			}
			if got := len(e.Entities("component")); got != 1 { // comp1 of the fixture requires sys1
				t.Fatalf("%d components left, want only comp1", got)
			}
			eachSource(func(ent port.Entity) error {
				if ent.Relations["system"] != nil {
					return fmt.Errorf("system %v, want null", ent.Relations["system"])
				}
				return nil
			})

			e.mu.RLock()
			defer e.mu.RUnlock()
			for k, in := range e.st.incoming {
				for _, src := range in.sources() {
					if strings.HasPrefix(k.id, "hub") || strings.HasPrefix(src.id, "comp-") {
						t.Errorf("the reverse index still has %v -> %v", src, k)
					}
				}
			}
			if in := e.st.incoming[refKey{"service", "svc1"}]; len(in.sources()) != n+1 { // svc2 and the sources
				t.Errorf("svc1 has %d entities pointing at it, want %d", len(in.sources()), n+1)
			}
		})
	}
}

// TestInSet counts relation values in and out across the switch from the
// short list to the map.
func TestInSet(t *testing.T) {
	t.Parallel()
	key := func(i int) refKey { return refKey{"service", fmt.Sprintf("s%d", i)} }
	for _, n := range []int{1, inSetListMax / 2, inSetListMax, inSetListMax + 1, 3 * inSetListMax} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var in inSet
			for i := range n { // each source twice
				in.add(key(i))
				in.add(key(i))
			}
			if got := len(in.sources()); got != n {
				t.Fatalf("%d sources, want %d", got, n)
			}
			for i := range n {
				in.remove(key(i))
			}
			if got := len(in.sources()); got != n || in.empty() {
				t.Fatalf("after one removal each: %d sources (empty %v), want %d", got, in.empty(), n)
			}
			in.remove(key(n)) // never added: no change
			for i := range n {
				in.remove(key(i))
			}
			if !in.empty() || len(in.sources()) != 0 {
				t.Fatalf("not empty after removing everything: %v", in.sources())
			}
		})
	}
}

// TestMetaStaysPerEntity writes entities that share their meta (writer,
// data sources, team, icon) and changes it for some of them: the others
// keep theirs.
func TestMetaStaysPerEntity(t *testing.T) {
	t.Parallel()
	e := contractFixture(t)
	put := func(id, ds string, merge bool, ent port.Entity) {
		t.Helper()
		ent.Identifier = id
		if _, err := e.PutEntity("service", ent, ds, merge); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"a", "b", "c"} {
		put(id, "x", false, port.Entity{})
	}
	e.mu.RLock()
	bs := e.st.blueprints["service"]
	shared := bs.entities["a"].meta == bs.entities["b"].meta && bs.entities["b"].meta == bs.entities["c"].meta
	e.mu.RUnlock()
	if !shared {
		t.Error("entities written alike do not share their meta")
	}
	put("a", "y", false, port.Entity{})
	put("b", "z", true, port.Entity{Team: "platform", Icon: "star"})
	put("c", "x", true, port.Entity{Relations: map[string]any{"system": "sys2"}})
	if st, out, _ := do(t, e, token(t, e), "DELETE", "/v1/blueprints/system/entities/sys2", ""); st != 200 {
		t.Fatalf("delete sys2: %d %v", st, out)
	}
	for _, c := range []struct {
		id, icon, updatedBy string
		team                any
		ds                  []string
	}{
		{"a", "", "y", nil, []string{"x", "y"}},
		{"b", "star", "z", []any{"platform"}, []string{"x", "z"}},
		{"c", "", e.ClientID(), nil, []string{"x"}}, // its relation to sys2 was cleared
	} {
		r, _ := e.Entity("service", c.id)
		if !slices.Equal(r.DataSources, c.ds) || r.UpdatedBy != c.updatedBy || r.Entity.Icon != c.icon || fmt.Sprint(r.Entity.Team) != fmt.Sprint(c.team) {
			t.Errorf("%s: data sources %v, updated by %q, icon %q, team %v; want %v, %q, %q, %v",
				c.id, r.DataSources, r.UpdatedBy, r.Entity.Icon, r.Entity.Team, c.ds, c.updatedBy, c.icon, c.team)
		}
	}
}

// TestInterner checks the interner's answers, also once it is full.
func TestInterner(t *testing.T) {
	t.Parallel()
	in := newInterner()
	for _, m := range []*meta{nil, {}, {Team: []string{}}, {Team: []string{"t"}, Icon: "i"}, {CreatedBy: "a\x00b"}, {CreatedBy: "a", UpdatedBy: "b"}, {DataSources: []string{"x", "y"}}} {
		want := m
		if want == nil {
			want = &meta{}
		}
		if got := in.meta(m); !got.equal(want) || got == m {
			t.Errorf("meta(%+v) = %+v (the same pointer: %v)", m, got, got == m)
		}
		if first, again := in.meta(m), in.meta(m); first != again {
			t.Errorf("meta(%+v) is not shared", m)
		}
	}
	for _, l := range [][]string{nil, {}, {"a"}, {"a", "b"}, {"a\x00b"}, {"b", "a"}, {"a", "b"}} {
		if got := in.list(l); !slices.Equal(got, l) || (got == nil) != (l == nil) || cap(got) != len(got) {
			t.Errorf("list(%q) = %q (cap %d)", l, got, cap(got))
		}
	}
	for i := range internMax + 10 {
		s := fmt.Sprint("user-", i)
		if got := in.str(s); got != s {
			t.Fatalf("str(%q) = %q", s, got)
		}
		if got := in.list([]string{s, "x"}); !slices.Equal(got, []string{s, "x"}) {
			t.Fatalf("list of %q = %q", s, got)
		}
	}
	if len(in.strs) > internMax || len(in.lists) > internMax {
		t.Fatalf("the interner grew past its bound: %d strings, %d lists", len(in.strs), len(in.lists))
	}
}

// TestPersistedObjects loads a state file whose entities carry properties
// or relations of the wrong type, and one with null for them.
func TestPersistedObjects(t *testing.T) {
	t.Parallel()
	state := func(ent string) string {
		return `{"blueprints":[{"identifier":"system","title":"S","schema":{"properties":{"p":{"type":"string"}}}}],` +
			`"entities":{"system":[` + ent + `]}}`
	}
	for _, c := range []struct {
		name, ent, err string
	}{
		{"properties not an object", `{"identifier":"x","properties":"oops","relations":{}}`, "entities.properties"},
		{"relations not an object", `{"identifier":"x","properties":{},"relations":[1]}`, "entities.relations"},
		{"null objects", `{"identifier":"x","properties":null,"relations":null}`, ""},
		{"objects", `{"identifier":"x","properties":{"p":"v"},"relations":{}}`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := t.TempDir() + "/state.json"
			if err := writeFile(file, state(c.ent)); err != nil {
				t.Fatal(err)
			}
			e, err := Open(Options{PersistFile: file})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), file) {
					t.Fatalf("error %v, want one naming %s and saying %q", err, file, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r, ok := e.Entity("system", "x")
			if !ok || r.Entity.Properties == nil || r.Entity.Relations == nil {
				t.Fatalf("not loaded: %+v", r)
			}
			_, b, _ := do(t, e, token(t, e), "GET", "/v1/blueprints/system/entities/x", "")
			if ent, _ := b["entity"].(map[string]any); ent["properties"] == nil || ent["relations"] == nil {
				t.Fatalf("answer %v, want objects for properties and relations", b)
			}
		})
	}
}
