package catalogtest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
)

const scaleToken = "scale-test-token-0123456789"

func serve(t testing.TB, emu *catalogtest.Emulator) string {
	t.Helper()
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return srv.URL
}

type rawPage struct {
	Items      []json.RawMessage `json:"items"`
	TotalItems *int              `json:"totalItems"`
	PageInfo   struct {
		NextCursor string `json:"nextCursor"`
		PrevCursor string `json:"prevCursor"`
	} `json:"pageInfo"`
}

func getPage(t testing.TB, base string, params url.Values) (int, rawPage, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/api/catalog/entities/by-query?"+params.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+scaleToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	var p rawPage
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(buf.Bytes(), &p); err != nil {
			t.Fatalf("page: %v: %s", err, buf.String())
		}
	}
	return resp.StatusCode, p, buf.Bytes()
}

// scanPages pages through a query and returns every item and the work the
// emulator counted for each page.
func scanPages(t testing.TB, emu *catalogtest.Emulator, base string, first url.Values) (items []json.RawMessage, work []int64, total int) {
	t.Helper()
	params := first
	for page := 0; ; page++ {
		before := emu.Work()
		status, p, body := getPage(t, base, params)
		if status != 200 {
			t.Fatalf("page %d: %d %s", page, status, body)
		}
		work = append(work, emu.Work()-before)
		items = append(items, p.Items...)
		if page == 0 {
			total = *p.TotalItems
		} else if *p.TotalItems != total {
			t.Fatalf("page %d says totalItems %d, the first said %d", page, *p.TotalItems, total)
		}
		if p.PageInfo.NextCursor == "" {
			return items, work, total
		}
		params = url.Values{"cursor": {p.PageInfo.NextCursor}, "limit": first["limit"]}
		if f := first["fields"]; f != nil {
			params["fields"] = f
		}
	}
}

func TestAddGeneratedServesWhatUpsertStores(t *testing.T) {
	t.Parallel()
	const n = 3000
	gen := catalogtest.New(catalogtest.Options{Token: scaleToken, Seed: 4})
	if err := gen.AddGenerated(n, 5); err != nil {
		t.Fatal(err)
	}
	stored := catalogtest.New(catalogtest.Options{Token: scaleToken, Seed: 4})
	if err := stored.UpsertAll(catalogtest.Generate(n, 5)); err != nil {
		t.Fatal(err)
	}
	compare := func(when string) {
		t.Helper()
		a, _, _ := scanPages(t, gen, serve(t, gen), url.Values{"limit": {"400"}})
		b, _, _ := scanPages(t, stored, serve(t, stored), url.Values{"limit": {"400"}})
		if len(a) != len(b) {
			t.Fatalf("%s: %d generated entities served, %d stored", when, len(a), len(b))
		}
		for i := range a {
			if !bytes.Equal(a[i], b[i]) {
				t.Fatalf("%s: entity %d differs:\ngenerated: %s\nstored:    %s", when, i, a[i], b[i])
			}
		}
	}
	compare("after loading")

	// Replace one generated entity (its owner changes) and delete another:
	// both emulators recompute the same peers.
	e, err := catalogtest.GeneratedEntity(n, 5, n-1)
	if err != nil {
		t.Fatal(err)
	}
	e["spec"].(map[string]any)["owner"] = "group-000002"
	e["metadata"].(map[string]any)["description"] = "changed"
	victim, _ := catalogtest.GeneratedEntity(n, 5, n-2)
	ref, _ := catalog.RefOf(victim)
	for _, emu := range []*catalogtest.Emulator{gen, stored} {
		if err := emu.Upsert(e); err != nil {
			t.Fatal(err)
		}
		if err := emu.Delete(ref.String()); err != nil {
			t.Fatal(err)
		}
	}
	compare("after an update and a delete")
	got, ok := gen.Get("group:default/group-000002")
	if !ok || !bytes.Contains(mustJSON(t, got), []byte(`component:default/component-`)) {
		t.Errorf("new owner lacks the ownerOf relation: %v", got)
	}

	if _, err := catalogtest.GeneratedEntity(n, 5, n); err == nil {
		t.Errorf("GeneratedEntity out of range accepted")
	}
	if err := gen.AddGenerated(-1, 1); err == nil {
		t.Errorf("AddGenerated(-1) accepted")
	}
}

func mustJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPageWorkDoesNotGrowWithN counts the records the emulator touches per
// by-query page (compared, scanned or rendered) for the same page size at
// two catalog sizes: a page costs the page plus a binary search, not N.
func TestPageWorkDoesNotGrowWithN(t *testing.T) {
	t.Parallel()
	const limit = 100
	sizes := []int{1_000, 16_000}
	queries := []struct {
		name string
		q    url.Values
		// firstPageScans: the first page of a filtered or field-ordered
		// query reads every entity once (to count and order, as the
		// database does); the pages after it must not.
		firstPageScans bool
	}{
		{"every entity", url.Values{}, false},
		{"identity fields, totalItems excluded", url.Values{"fields": {"kind,metadata.namespace,metadata.name,metadata.uid,metadata.etag"}, "totalItems": {"exclude"}}, false},
		{"filtered", url.Values{"filter": {"kind=component"}}, true},
		{"ordered by name", url.Values{"orderField": {"metadata.name,desc"}}, true},
	}
	worst := map[string][]int64{}
	for _, n := range sizes {
		emu := catalogtest.New(catalogtest.Options{Token: scaleToken, Seed: 1})
		if err := emu.AddGenerated(n, 1); err != nil {
			t.Fatal(err)
		}
		base := serve(t, emu)
		for _, qc := range queries {
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			for k, v := range qc.q {
				q[k] = v
			}
			items, work, _ := scanPages(t, emu, base, q)
			if len(items) == 0 {
				t.Fatalf("%s at N=%d: no items", qc.name, n)
			}
			if qc.firstPageScans {
				if work[0] < int64(n) {
					t.Errorf("%s at N=%d: first page touched %d records; expected one pass over all", qc.name, n, work[0])
				}
				work = work[1:]
			}
			var mx int64
			for _, w := range work {
				mx = max(mx, w)
			}
			bound := int64(limit + 2*int(math.Ceil(math.Log2(float64(n)))) + 2)
			if mx > bound {
				t.Errorf("%s at N=%d: a page touched %d records, more than page + 2·log2(N) = %d", qc.name, n, mx, bound)
			}
			worst[qc.name] = append(worst[qc.name], mx)
			t.Logf("%s at N=%d: %d pages, most work per page %d", qc.name, n, len(work), mx)
		}
	}
	for name, w := range worst {
		// from 1k to 16k only the binary search may grow: 2·(log2 16k − log2 1k) = 8
		if w[1] > w[0]+12 {
			t.Errorf("%s: work per page grew with N: %v", name, w)
		}
	}
}

func TestQueryParameters(t *testing.T) {
	t.Parallel()
	emu := catalogtest.New(catalogtest.Options{Token: scaleToken, Seed: 2})
	if err := emu.AddGenerated(250, 3); err != nil {
		t.Fatal(err)
	}
	base := serve(t, emu)
	identity := "kind,metadata.namespace,metadata.name,metadata.uid,metadata.etag"

	t.Run("totalItems", func(t *testing.T) {
		for _, tc := range []struct {
			mode string
			want int
		}{{"", 250}, {"include", 250}, {"exclude", 0}} {
			q := url.Values{"limit": {"100"}}
			if tc.mode != "" {
				q.Set("totalItems", tc.mode)
			}
			items, _, total := scanPages(t, emu, base, q)
			if total != tc.want || len(items) != 250 {
				t.Errorf("totalItems=%q: total %d (want %d), %d items", tc.mode, total, tc.want, len(items))
			}
		}
		status, _, body := getPage(t, base, url.Values{"totalItems": {"some"}})
		if status != 400 || !bytes.Contains(body, []byte(`Invalid totalItems parameter \"some\", expected one of: include, exclude`)) {
			t.Errorf("bad totalItems: %d %s", status, body)
		}
	})

	t.Run("identity projection equals the entity's fields", func(t *testing.T) {
		cheap, _, _ := scanPages(t, emu, base, url.Values{"limit": {"60"}, "fields": {identity + ",apiVersion"}})
		full, _, _ := scanPages(t, emu, base, url.Values{"limit": {"60"}})
		if len(cheap) != len(full) {
			t.Fatalf("%d projected, %d full", len(cheap), len(full))
		}
		for i := range full {
			var f, c map[string]any
			_ = json.Unmarshal(full[i], &f)
			_ = json.Unmarshal(cheap[i], &c)
			fm, cm := f["metadata"].(map[string]any), c["metadata"].(map[string]any)
			want := fmt.Sprint(f["apiVersion"], f["kind"], fm["namespace"], fm["name"], fm["uid"], fm["etag"])
			got := fmt.Sprint(c["apiVersion"], c["kind"], cm["namespace"], cm["name"], cm["uid"], cm["etag"])
			if want != got || len(c) != 3 || len(cm) != 4 {
				t.Fatalf("item %d: projected %s, entity has %s", i, cheap[i], want)
			}
		}
		// a projection beyond the identity decodes the entity
		_, p, _ := getPage(t, base, url.Values{"limit": {"1"}, "fields": {"metadata.name,metadata.description"}})
		var one map[string]any
		_ = json.Unmarshal(p.Items[0], &one)
		if m, _ := one["metadata"].(map[string]any); len(one) != 1 || len(m) != 2 || m["description"] == nil {
			t.Errorf("projection with metadata.description: %s", p.Items[0])
		}
	})

	t.Run("cursor carries the query", func(t *testing.T) {
		// a filter given next to a cursor is ignored: the cursor carries it
		_, first, _ := getPage(t, base, url.Values{"limit": {"5"}, "filter": {"kind=group"}})
		_, second, _ := getPage(t, base, url.Values{"cursor": {first.PageInfo.NextCursor}, "filter": {"kind=user"}, "limit": {"5"}})
		for _, it := range second.Items {
			if !bytes.Contains(it, []byte(`"kind":"Group"`)) {
				t.Fatalf("second page ignored the cursor's filter: %s", it)
			}
		}
		if second.PageInfo.PrevCursor == "" || *second.TotalItems != *first.TotalItems {
			t.Errorf("second page: prevCursor %q, totalItems %d vs %d", second.PageInfo.PrevCursor, *second.TotalItems, *first.TotalItems)
		}
		_, back, _ := getPage(t, base, url.Values{"cursor": {second.PageInfo.PrevCursor}, "limit": {"5"}})
		if len(back.Items) != 5 || !bytes.Equal(back.Items[0], first.Items[0]) {
			t.Errorf("prevCursor did not lead back to the first page")
		}
		// an exactly full last page has no next cursor (Backstage asks for limit+1)
		_, all, _ := getPage(t, base, url.Values{"limit": {"250"}})
		if len(all.Items) != 250 || all.PageInfo.NextCursor != "" {
			t.Errorf("full single page: %d items, next cursor %q", len(all.Items), all.PageInfo.NextCursor)
		}
	})

	t.Run("keyset paging survives mutations", func(t *testing.T) {
		emu := catalogtest.New(catalogtest.Options{Token: scaleToken, Seed: 2})
		if err := emu.AddGenerated(300, 3); err != nil {
			t.Fatal(err)
		}
		base := serve(t, emu)
		_, first, _ := getPage(t, base, url.Values{"limit": {"100"}})
		var last map[string]any
		_ = json.Unmarshal(first.Items[99], &last)
		// delete an entity already read: later pages must not shift
		var firstItem map[string]any
		_ = json.Unmarshal(first.Items[0], &firstItem)
		ref, _ := catalog.RefOf(firstItem)
		if err := emu.Delete(ref.String()); err != nil {
			t.Fatal(err)
		}
		rest, _, _ := scanPages(t, emu, base, url.Values{"cursor": {first.PageInfo.NextCursor}, "limit": {"100"}})
		if len(rest) != 200 {
			t.Errorf("after deleting a read entity the rest of the scan has %d entities, want 200", len(rest))
		}
	})
}

// BenchmarkServeGeneratedPage measures a page of 500 full generated
// entities (rendered on demand) and of their identity projection.
func BenchmarkServeGeneratedPage(b *testing.B) {
	emu := catalogtest.New(catalogtest.Options{Token: scaleToken, Seed: 1})
	if err := emu.AddGenerated(20_000, 1); err != nil {
		b.Fatal(err)
	}
	base := serve(b, emu)
	for _, bc := range []struct {
		name string
		q    url.Values
	}{
		{"full", url.Values{"limit": {"500"}}},
		{"identity", url.Values{"limit": {"500"}, "fields": {"kind,metadata.namespace,metadata.name,metadata.uid,metadata.etag"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if status, _, _ := getPage(b, base, bc.q); status != 200 {
					b.Fatal(status)
				}
			}
		})
	}
}
