package catalogtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	backstagetest "github.com/portbridge/portbridge/test/backstage"
)

// The conformance suite: the same checks against the emulator and against a
// real Backstage catalog backend loaded with the same YAML. Differences
// found are fixed in the emulator or listed in DIFFERENCES.md.

const conformanceToken = "conformance-token-0123456789"

// exampleTotal is what Backstage serves for testdata/backstage-examples'
// two roots: 54 entities, 8 Location entities, 2 generated Locations.
const exampleTotal = 64

func exampleRoots() []string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "backstage-examples")
	return []string{filepath.Join(dir, "all.yaml"), filepath.Join(dir, "acme-corp.yaml")}
}

// target is one catalog under test.
type target struct {
	name    string
	baseURL string
	// setProvided replaces the set of entities added on top of the YAML
	// (the real backend's full-mutation provider; Upsert/Delete on the
	// emulator).
	setProvided func(t *testing.T, entities ...catalog.Entity)
	emu         *catalogtest.Emulator
}

func emulatorTarget(t *testing.T) target {
	emu := catalogtest.New(catalogtest.Options{Token: conformanceToken})
	if err := emu.LoadFiles(exampleRoots()...); err != nil {
		t.Fatalf("load examples into the emulator: %v", err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	var provided []string
	return target{
		name:    "emulator",
		baseURL: srv.URL,
		emu:     emu,
		setProvided: func(t *testing.T, entities ...catalog.Entity) {
			keep := map[string]bool{}
			for _, e := range entities {
				r, err := catalog.RefOf(e)
				if err != nil {
					t.Fatal(err)
				}
				keep[r.String()] = true
			}
			for _, r := range provided {
				if !keep[r] {
					if err := emu.Delete(r); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := emu.Upsert(entities...); err != nil {
				t.Fatal(err)
			}
			provided = provided[:0]
			for r := range keep {
				provided = append(provided, r)
			}
		},
	}
}

func realTarget(t *testing.T) target {
	b := backstagetest.Start(t, backstagetest.Options{
		Locations:   exampleRoots(),
		Token:       conformanceToken,
		ExpectTotal: exampleTotal,
	})
	return target{
		name:    "backstage",
		baseURL: b.URL,
		setProvided: func(t *testing.T, entities ...catalog.Entity) {
			if err := b.SetEntities(entities...); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func targets(t *testing.T) []target {
	ts := []target{emulatorTarget(t)}
	if testing.Short() {
		t.Log("real Backstage target skipped with -short")
		return ts
	}
	return append(ts, realTarget(t))
}

func newClient(t *testing.T, baseURL, token string, pageSize int) *catalog.Client {
	c, err := catalog.New(catalog.Config{BaseURL: baseURL, Token: token, PageSize: pageSize, Retries: 2, RetryWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func scan(t *testing.T, c *catalog.Client, q catalog.Query) []catalog.Entity {
	t.Helper()
	var out []catalog.Entity
	for e, err := range c.Entities(context.Background(), q) {
		if err != nil {
			t.Fatalf("scan %+v: %v", q, err)
		}
		out = append(out, e)
	}
	return out
}

func refOf(t *testing.T, e catalog.Entity) string {
	r, err := catalog.RefOf(e)
	if err != nil {
		t.Fatal(err)
	}
	return r.String()
}

func relationsOf(e catalog.Entity) []string {
	var out []string
	rels, _ := e["relations"].([]any)
	for _, r := range rels {
		m := r.(map[string]any)
		out = append(out, fmt.Sprintf("%s %s", m["type"], m["targetRef"]))
	}
	return out
}

func meta(e catalog.Entity, key string) string {
	s, _ := e["metadata"].(map[string]any)[key].(string)
	return s
}

// normalized drops what differs by nature between two catalogs: uid, etag.
func normalized(t *testing.T, all []catalog.Entity) map[string]string {
	out := map[string]string{}
	for _, e := range all {
		m := e["metadata"].(map[string]any)
		delete(m, "uid")
		delete(m, "etag")
		b, _ := json.Marshal(e)
		out[refOf(t, e)] = string(b)
	}
	return out
}

func TestConformance(t *testing.T) {
	ts := targets(t)
	dumps := map[string]map[string]string{}
	for _, tg := range ts {
		t.Run(tg.name, func(t *testing.T) {
			c := newClient(t, tg.baseURL, conformanceToken, 7)
			ctx := context.Background()

			all := scan(t, c, catalog.Query{})
			t.Run("paging", func(t *testing.T) {
				if len(all) != exampleTotal {
					t.Fatalf("scan gave %d entities, want %d", len(all), exampleTotal)
				}
				seen := map[string]bool{}
				for _, e := range all {
					seen[meta(e, "uid")] = true
				}
				if len(seen) != exampleTotal {
					t.Errorf("scan gave %d distinct uids, want %d", len(seen), exampleTotal)
				}
				if n, err := c.Count(ctx); err != nil || n != exampleTotal {
					t.Errorf("Count() = %d, %v; want %d", n, err, exampleTotal)
				}
			})
			dumps[tg.name] = normalized(t, scan(t, c, catalog.Query{}))

			byRef := map[string]catalog.Entity{}
			for _, e := range all {
				byRef[refOf(t, e)] = e
			}
			t.Run("relations", func(t *testing.T) {
				for _, tc := range []struct {
					ref  string
					want []string // must be present
					not  []string // must be absent
				}{
					{"component:default/playback-order", []string{"ownedBy group:default/guest"}, nil},
					{"domain:default/artists", []string{"hasPart system:default/artist-engagement-portal", "ownedBy group:default/team-a", "partOf domain:default/audio"}, nil},
					{"domain:default/audio", []string{"hasPart domain:default/artists"}, nil},
					{"group:default/team-a", []string{"childOf group:default/backstage", "hasMember user:development/guest", "ownerOf component:default/artist-lookup"}, nil},
					{"user:development/guest", []string{"memberOf group:default/team-a"}, nil},
					{"resource:default/artists-db", []string{"dependencyOf component:default/artist-lookup", "partOf system:default/artist-engagement-portal"}, nil},
					{"api:default/petstore-webhook", []string{"ownedBy group:default/team-c"}, nil},
					{"group:default/boxoffice", []string{"parentOf group:default/team-c"}, nil},
				} {
					e := byRef[tc.ref]
					if e == nil {
						t.Errorf("%s missing", tc.ref)
						continue
					}
					got := relationsOf(e)
					for _, w := range tc.want {
						if !slices.Contains(got, w) {
							t.Errorf("%s relations %v lack %q", tc.ref, got, w)
						}
					}
					if !slices.IsSorted(got) {
						t.Errorf("%s relations not sorted: %v", tc.ref, got)
					}
					if n := len(slices.Compact(slices.Clone(got))); n != len(got) {
						t.Errorf("%s relations have duplicates: %v", tc.ref, got)
					}
				}
			})
			t.Run("by-refs", func(t *testing.T) {
				got, err := c.EntitiesByRefs(ctx, []string{"component:playback-order", "Component:default/Nope", "API:default/Petstore"}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != 3 || got[0] == nil || got[1] != nil || got[2] == nil || meta(got[2], "name") != "petstore" {
					t.Fatalf("by-refs = %v", got)
				}
				got, err = c.EntitiesByRefs(ctx, []string{"user:default/guest"}, []string{"kind", "metadata.name"})
				if err != nil || len(got) != 1 || len(got[0]) != 2 || len(got[0]["metadata"].(map[string]any)) != 1 {
					t.Fatalf("by-refs with fields = %v, %v", got, err)
				}
			})
			t.Run("by-name and by-uid", func(t *testing.T) {
				e, err := c.EntityByRef(ctx, catalog.Ref{Kind: "Component", Namespace: "default", Name: "Petstore"})
				if err != nil {
					t.Fatal(err)
				}
				if meta(e, "name") != "petstore" {
					t.Fatalf("by-name gave %v", e)
				}
				byUID, err := c.EntityByUID(ctx, meta(e, "uid"))
				if err != nil || meta(byUID, "etag") != meta(e, "etag") {
					t.Fatalf("by-uid = %v, %v", byUID, err)
				}
				_, err = c.EntityByRef(ctx, catalog.Ref{Kind: "component", Namespace: "default", Name: "nope"})
				var ae *catalog.APIError
				if !catalog.IsNotFound(err) || !errors.As(err, &ae) || ae.Name != "NotFoundError" ||
					ae.Message != "No entity named 'nope' found, with kind 'component' in namespace 'default'" {
					t.Errorf("by-name of a missing entity: %v", err)
				}
				_, err = c.EntityByUID(ctx, "00000000-0000-4000-8000-000000000000")
				if !catalog.IsNotFound(err) || !errors.As(err, &ae) || ae.Message != "No entity with uid 00000000-0000-4000-8000-000000000000" {
					t.Errorf("by-uid of a missing entity: %v", err)
				}
			})
			t.Run("filters", func(t *testing.T) {
				for _, tc := range []struct {
					filters []string
					want    int
				}{
					{[]string{"kind=user,relations.memberof=group:default/team-a"}, 5},
					{[]string{"kind=Domain", "kind=system"}, 6},
					{[]string{"spec.subcomponentOf"}, 2},
					{[]string{"metadata.tags.java"}, -1},
					{[]string{"kind=component,spec.lifecycle=production,spec.lifecycle=experimental"}, 13},
					{[]string{"metadata.namespace=development"}, 1},
				} {
					got := scan(t, c, catalog.Query{Filters: tc.filters})
					n, err := c.Count(ctx, tc.filters...)
					if err != nil || n != len(got) {
						t.Errorf("filters %q: Count %d, %v; scan %d", tc.filters, n, err, len(got))
					}
					if tc.want >= 0 && len(got) != tc.want {
						t.Errorf("filters %q: %d entities, want %d", tc.filters, len(got), tc.want)
					}
					if tc.want < 0 && len(got) == 0 {
						t.Errorf("filters %q: no entities", tc.filters)
					}
				}
			})
			t.Run("order and fields", func(t *testing.T) {
				got := scan(t, c, catalog.Query{Filters: []string{"kind=user"}, OrderField: "metadata.name,desc", Fields: []string{"metadata.name", "metadata.namespace"}})
				var names []string
				for _, e := range got {
					if len(e) != 1 || len(e["metadata"].(map[string]any)) != 2 {
						t.Fatalf("projection kept more than asked: %v", e)
					}
					names = append(names, meta(e, "name"))
				}
				if len(names) != 17 || !slices.IsSortedFunc(names, func(a, b string) int { return strings.Compare(b, a) }) {
					t.Errorf("users by name desc: %v", names)
				}
			})
			t.Run("listing and scan bookkeeping", func(t *testing.T) { testListing(t, tg, c, all) })
			t.Run("errors", func(t *testing.T) {
				for _, tc := range []struct {
					token, msg string
				}{{"", "Missing credentials"}, {"wrong-token-123456789", "Illegal token"}} {
					bad := newClient(t, tg.baseURL, tc.token, 7)
					_, err := bad.EntityByUID(ctx, "x")
					var ae *catalog.APIError
					if !catalog.IsUnauthorized(err) || !errors.As(err, &ae) || ae.Name != "AuthenticationError" || ae.Message != tc.msg {
						t.Errorf("token %q: %v", tc.token, err)
					}
					if err != nil && (!strings.Contains(err.Error(), tg.baseURL) || (tc.token != "" && strings.Contains(err.Error(), tc.token))) {
						t.Errorf("error must name the URL and not the token: %v", err)
					}
				}
				for _, tc := range []struct{ query, name string }{
					{"cursor=abc", "InputError"},
					{"orderField=metadata.name,up", "InputError"},
					{"filter=", "InputError"},
					{"filter==x", "InputError"},
					{"fields=metadata.tags[0]", "InputError"},
					{"totalItems=some", "InputError"},
				} {
					status, body := rawGet(t, tg.baseURL+"/api/catalog/entities/by-query?"+tc.query)
					var eb struct {
						Error    struct{ Name string }
						Request  struct{ Method, URL string }
						Response struct{ StatusCode int }
					}
					if err := json.Unmarshal(body, &eb); err != nil || status != 400 || eb.Error.Name != tc.name ||
						eb.Response.StatusCode != 400 || eb.Request.Method != "GET" || eb.Request.URL != "/entities/by-query?"+tc.query {
						t.Errorf("%s: %d %s", tc.query, status, body)
					}
				}
			})
			t.Run("mutations and etags", func(t *testing.T) { testMutations(t, tg, c) })
		})
	}
	if len(dumps) == 2 {
		t.Run("same catalog", func(t *testing.T) {
			emu, real := dumps["emulator"], dumps["backstage"]
			for ref, want := range real {
				if got, ok := emu[ref]; !ok {
					t.Errorf("emulator lacks %s", ref)
				} else if got != want {
					t.Errorf("%s differs:\nemulator:  %s\nbackstage: %s", ref, got, want)
				}
			}
			for ref := range emu {
				if _, ok := real[ref]; !ok {
					t.Errorf("backstage lacks %s", ref)
				}
			}
		})
	}
}

func rawGet(t *testing.T, u string) (int, []byte) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+conformanceToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, []byte(b.String())
}

// eventually polls cond until it holds; the real backend applies provider
// changes asynchronously (1-2 s), the emulator at once.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened; last state: %s", what, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func testMutations(t *testing.T, tg target, c *catalog.Client) {
	ctx := context.Background()
	get := func(ref string) catalog.Entity {
		r, _ := catalog.ParseRef(ref, "")
		e, err := c.EntityByRef(ctx, r)
		if catalog.IsNotFound(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	team, bystander, system := "group:default/team-a", "user:default/jenny.doe", "system:default/audio-playback"
	teamBefore, byBefore := get(team), get(bystander)
	svc := func(desc string) catalog.Entity {
		return catalog.Entity{
			"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
			"metadata": map[string]any{"name": "conformance-svc", "description": desc, "annotations": map[string]any{
				catalogtest.AnnotationLocation: "url:https://example.com/conformance-svc.yaml", catalogtest.AnnotationOriginLocation: "url:https://example.com/conformance-svc.yaml"}},
			"spec": map[string]any{"type": "service", "lifecycle": "production", "owner": "team-a", "system": "audio-playback"},
		}
	}
	const ref = "component:default/conformance-svc"
	tg.setProvided(t, svc("first"))
	var added catalog.Entity
	eventually(t, "added component with reverse relations", func() (bool, string) {
		added = get(ref)
		tm := get(team)
		return added != nil && slices.Contains(relationsOf(tm), "ownerOf "+ref) && slices.Contains(relationsOf(get(system)), "hasPart "+ref), fmt.Sprint(added != nil, relationsOf(tm))
	})
	if got := relationsOf(added); !slices.Equal(got, []string{"ownedBy group:default/team-a", "partOf system:default/audio-playback"}) {
		t.Errorf("added relations %v", got)
	}
	teamAfterAdd := get(team)
	if meta(teamAfterAdd, "etag") == meta(teamBefore, "etag") {
		t.Errorf("owner's etag did not change when it gained a relation")
	}
	if meta(get(bystander), "etag") != meta(byBefore, "etag") {
		t.Errorf("unrelated entity's etag changed")
	}

	tg.setProvided(t, svc("second"))
	eventually(t, "updated description", func() (bool, string) {
		e := get(ref)
		return e != nil && meta(e, "description") == "second", fmt.Sprint(e)
	})
	updated := get(ref)
	if meta(updated, "etag") == meta(added, "etag") || meta(updated, "uid") != meta(added, "uid") {
		t.Errorf("update: etag %s -> %s, uid %s -> %s", meta(added, "etag"), meta(updated, "etag"), meta(added, "uid"), meta(updated, "uid"))
	}
	if meta(get(team), "etag") != meta(teamAfterAdd, "etag") {
		t.Errorf("owner's etag changed though its relations did not")
	}

	tg.setProvided(t)
	eventually(t, "deleted component and its reverse relations", func() (bool, string) {
		tm := get(team)
		return get(ref) == nil && !slices.Contains(relationsOf(tm), "ownerOf "+ref), fmt.Sprint(relationsOf(tm))
	})
	if meta(get(team), "etag") != meta(teamBefore, "etag") {
		t.Errorf("owner's etag after delete differs from before the add (same stitched output)")
	}
}

// testListing checks what the client's cheap listing and scan bookkeeping
// rely on: a fields projection of the identity (and nothing else),
// totalItems=exclude, totalItems repeated on every page, the last page
// without a next cursor, the filter carried by the cursor, by-refs
// streaming, and an orderField leaving out entities without the field.
func testListing(t *testing.T, tg target, c *catalog.Client, all []catalog.Entity) {
	ctx := context.Background()
	want := map[string]catalog.Version{}
	withLifecycle := 0
	for _, e := range all {
		md := e["metadata"].(map[string]any)
		r := refOf(t, e)
		want[r] = catalog.Version{Ref: r, UID: md["uid"].(string), Etag: md["etag"].(string)}
		if spec, _ := e["spec"].(map[string]any); spec["lifecycle"] != nil {
			withLifecycle++
		}
	}
	for _, exclude := range []bool{false, true} {
		s := c.Scan(ctx, catalog.Query{ExcludeTotal: exclude})
		got := map[string]catalog.Version{}
		for v, err := range s.Versions() {
			if err != nil {
				t.Fatalf("versions (exclude total %v): %v", exclude, err)
			}
			got[v.Ref] = v
		}
		r := s.Result()
		wantTotal := exampleTotal
		if exclude {
			wantTotal = -1
		}
		if len(got) != exampleTotal || r.Seen != exampleTotal || r.TotalItems != wantTotal || r.Pages != (exampleTotal+6)/7 || r.Err() != nil {
			t.Errorf("versions (exclude total %v): %d distinct, result %+v, err %v", exclude, len(got), r, r.Err())
		}
		for ref, v := range want {
			if got[ref] != v {
				t.Errorf("version of %s = %+v, the entity says %+v", ref, got[ref], v)
			}
		}
	}

	// raw pages: what exactly comes back
	page := func(q string) (int, map[string]any) {
		status, body := rawGet(t, tg.baseURL+"/api/catalog/entities/by-query?"+q)
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		return status, m
	}
	next := func(m map[string]any) string {
		s, _ := m["pageInfo"].(map[string]any)["nextCursor"].(string)
		return s
	}
	_, p := page("limit=5&totalItems=exclude&fields=kind,metadata.name,metadata.namespace,metadata.uid,metadata.etag")
	if p["totalItems"] != float64(0) || next(p) == "" {
		t.Errorf("first page with totalItems=exclude: totalItems %v, next cursor %q", p["totalItems"], next(p))
	}
	for _, it := range p["items"].([]any) {
		m := it.(map[string]any)
		if len(m) != 2 || len(m["metadata"].(map[string]any)) != 4 {
			t.Errorf("identity projection kept more or less: %v", m)
		}
	}
	_, p2 := page("limit=5&cursor=" + url.QueryEscape(next(p)))
	if p2["totalItems"] != float64(0) {
		t.Errorf("later page after totalItems=exclude: totalItems %v", p2["totalItems"])
	}
	_, f1 := page("limit=3&filter=kind=group")
	_, f2 := page("limit=3&filter=kind=user&cursor=" + url.QueryEscape(next(f1)))
	for _, it := range f2["items"].([]any) {
		if k := it.(map[string]any)["kind"]; k != "Group" {
			t.Errorf("a filter next to a cursor was not ignored: kind %v", k)
		}
	}
	if f2["totalItems"] != f1["totalItems"] || f2["pageInfo"].(map[string]any)["prevCursor"] == nil {
		t.Errorf("second page: totalItems %v (first %v), pageInfo %v", f2["totalItems"], f1["totalItems"], f2["pageInfo"])
	}
	_, whole := page(fmt.Sprintf("limit=%d", exampleTotal))
	if len(whole["items"].([]any)) != exampleTotal || next(whole) != "" {
		t.Errorf("a page holding everything: %d items, next cursor %q", len(whole["items"].([]any)), next(whole))
	}
	_, almost := page(fmt.Sprintf("limit=%d", exampleTotal-1))
	_, rest := page("cursor=" + url.QueryEscape(next(almost)))
	if len(rest["items"].([]any)) != 1 || next(rest) != "" {
		t.Errorf("the last of %d: %d items, next cursor %q", exampleTotal, len(rest["items"].([]any)), next(rest))
	}
	_, ordered := page(fmt.Sprintf("limit=%d&orderField=spec.lifecycle,asc", exampleTotal))
	if ordered["totalItems"] != float64(withLifecycle) || len(ordered["items"].([]any)) != withLifecycle {
		t.Errorf("ordered by spec.lifecycle: totalItems %v, %d items; %d entities have the field", ordered["totalItems"], len(ordered["items"].([]any)), withLifecycle)
	}

	// by-refs streamed in chunks of the page size (7): order kept, null for a miss
	refs := make([]string, 0, len(want)+1)
	for r := range want {
		refs = append(refs, r)
	}
	slices.Sort(refs)
	refs = append(refs[:10], append([]string{"component:default/not-there"}, refs[10:]...)...)
	i := 0
	for f, err := range c.FetchByRefs(ctx, refs, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if f.Ref != refs[i] || (f.Entity == nil) != (i == 10) || (f.Entity != nil && refOf(t, f.Entity) != refs[i]) {
			t.Errorf("by-refs item %d: %s, entity %v", i, f.Ref, f.Entity != nil)
		}
		i++
	}
	if i != len(refs) {
		t.Errorf("by-refs gave %d of %d", i, len(refs))
	}
}
