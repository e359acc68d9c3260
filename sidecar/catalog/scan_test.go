package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
)

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestScanFetchesOnePageAhead(t *testing.T) {
	t.Parallel()
	emu, url := start(t, 35)
	c := client(t, url, token, 10)
	n := 0
	for _, err := range c.Entities(context.Background(), catalog.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 1 {
			// While the caller holds page 0, page 1 is requested...
			waitFor(t, "the second page requested during the first", func() bool { return emu.Requests()["by-query"] == 2 })
			// ...and nothing beyond it: memory stays at two pages.
			time.Sleep(50 * time.Millisecond)
			if got := emu.Requests()["by-query"]; got != 2 {
				t.Fatalf("%d pages requested while the caller held the first; want 2", got)
			}
		}
	}
	if n != 35 || emu.Requests()["by-query"] != 4 {
		t.Errorf("scanned %d entities in %d requests, want 35 in 4", n, emu.Requests()["by-query"])
	}
}

func TestScanStopsCleanly(t *testing.T) {
	t.Parallel()
	t.Run("caller stops early", func(t *testing.T) {
		emu, url := start(t, 100)
		c := client(t, url, token, 10)
		s := c.Scan(context.Background(), catalog.Query{})
		for _, err := range s.Entities() {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		// the prefetching goroutine is gone when the loop returns: at most
		// the page ahead was requested (it may arrive after the stop)
		time.Sleep(50 * time.Millisecond)
		if got := emu.Requests()["by-query"]; got > 2 {
			t.Errorf("%d pages requested for a scan stopped in its first page", got)
		}
		if r := s.Result(); r.Finished || r.Seen != 1 || !errors.Is(r.Err(), catalog.ErrScanNotFinished) {
			t.Errorf("result after an early stop = %+v, err %v", r, r.Err())
		}
		for _, err := range s.Entities() {
			if err == nil || !strings.Contains(err.Error(), "only once") {
				t.Errorf("second iteration: %v", err)
			}
		}
	})
	t.Run("context canceled mid-scan", func(t *testing.T) {
		_, url := start(t, 100)
		c := client(t, url, token, 10)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		n := 0
		var last error
		for _, err := range c.Entities(ctx, catalog.Query{}) {
			if err != nil {
				last = err
				break
			}
			n++
			if n == 15 {
				cancel()
			}
		}
		if !errors.Is(last, context.Canceled) || n >= 100 {
			t.Errorf("canceled scan: %d entities, error %v; want an error naming the cancellation", n, last)
		}
	})
}

func TestScanResult(t *testing.T) {
	t.Parallel()
	t.Run("complete", func(t *testing.T) {
		_, url := start(t, 35)
		c := client(t, url, token, 10)
		for _, exclude := range []bool{false, true} {
			s := c.Scan(context.Background(), catalog.Query{ExcludeTotal: exclude})
			for _, err := range s.Entities() {
				if err != nil {
					t.Fatal(err)
				}
			}
			r := s.Result()
			want := 35
			if exclude {
				want = -1
			}
			if r.TotalItems != want || r.Seen != 35 || r.Pages != 4 || !r.Finished || r.Err() != nil {
				t.Errorf("exclude %v: result %+v, err %v", exclude, r, r.Err())
			}
		}
	})
	t.Run("entity deleted during the scan", func(t *testing.T) {
		emu, url := start(t, 35)
		c := client(t, url, token, 10)
		s := c.Scan(context.Background(), catalog.Query{})
		deleted := false
		for e, err := range s.Entities() {
			if err != nil {
				t.Fatal(err)
			}
			if !deleted {
				// delete the entity read first: later pages do not shift
				ref, _ := catalog.RefOf(e)
				if err := emu.Delete(ref.String()); err != nil {
					t.Fatal(err)
				}
				deleted = true
			}
		}
		r := s.Result()
		if r.Seen != 35 || r.Err() != nil {
			t.Errorf("deleting a read entity: %+v, %v", r, r.Err())
		}
		emu.ResetRequests()
		s = c.Scan(context.Background(), catalog.Query{})
		n := 0
		for _, err := range s.Entities() {
			if err != nil {
				t.Fatal(err)
			}
			if n++; n == 1 {
				// delete an entity not read yet: the scan sees one fewer
				refs := emu.Refs()
				if err := emu.Delete(refs[len(refs)-1]); err != nil {
					t.Fatal(err)
				}
			}
		}
		var short *catalog.ShortScanError
		r = s.Result()
		if r.TotalItems != 34 || r.Seen != 33 || !errors.As(r.Err(), &short) || short.Seen != 33 || short.TotalItems != 34 {
			t.Errorf("deleting an unread entity: %+v, %v", r, r.Err())
		}
	})
	t.Run("last page before totalItems", func(t *testing.T) {
		emu, url := start(t, 35)
		emu.GarbleAfter(1, `{"items":[{"apiVersion":"backstage.io/v1alpha1","kind":"Component","metadata":{"name":"x","uid":"u"}}],"totalItems":35,"pageInfo":{}}`)
		c := client(t, url, token, 10)
		s := c.Scan(context.Background(), catalog.Query{})
		for _, err := range s.Entities() {
			if err != nil {
				t.Fatal(err)
			}
		}
		var short *catalog.ShortScanError
		if r := s.Result(); !r.Finished || !errors.As(r.Err(), &short) || !strings.Contains(r.Err().Error(), "after 11 entities, but the catalog counted 35") {
			t.Errorf("short scan: %+v, %v", r, r.Err())
		}
	})
}

func TestVersions(t *testing.T) {
	t.Parallel()
	emu, url := start(t, 1234)
	c := client(t, url, token, 100)
	want := map[string]catalog.Version{}
	for e, err := range c.Entities(context.Background(), catalog.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := catalog.RefOf(e)
		md := e["metadata"].(map[string]any)
		want[ref.String()] = catalog.Version{Ref: ref.String(), UID: md["uid"].(string), Etag: md["etag"].(string)}
	}
	emu.ResetRequests()
	s := c.Scan(context.Background(), catalog.Query{})
	n := 0
	for v, err := range s.Versions() {
		if err != nil {
			t.Fatal(err)
		}
		if want[v.Ref] != v {
			t.Fatalf("version %+v, the entity says %+v", v, want[v.Ref])
		}
		n++
	}
	if r := s.Result(); n != 1234 || r.TotalItems != 1234 || r.Err() != nil || emu.Requests()["by-query"] != 13 {
		t.Errorf("versions: %d, %+v, %d requests", n, r, emu.Requests()["by-query"])
	}

	for _, tc := range []struct{ name, page, want string }{
		{"no uid", `{"items":[{"kind":"Component","metadata":{"name":"x","namespace":"default"}}],"totalItems":1,"pageInfo":{}}`, "lacks kind"},
		{"no kind", `{"items":[{"metadata":{"name":"x","uid":"u1"}}],"totalItems":1,"pageInfo":{}}`, "u1"},
		{"bad name", `{"items":[{"kind":"Component","metadata":{"name":"a/b","uid":"u2"}}],"totalItems":1,"pageInfo":{}}`, "u2"},
		{"items not a list", `{"items":{},"totalItems":1,"pageInfo":{}}`, "decode JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			emu, url := start(t, 5)
			emu.GarbleAfter(0, tc.page)
			var me *catalog.MalformedResponseError
			for _, err := range client(t, url, token, 10).Scan(context.Background(), catalog.Query{}).Versions() {
				if !errors.As(err, &me) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("err = %v, want a malformed-response error mentioning %q", err, tc.want)
				}
				if err != nil {
					return
				}
			}
			t.Errorf("malformed listing accepted")
		})
	}
}

func TestFetchByRefs(t *testing.T) {
	t.Parallel()
	emu, url := start(t, 300)
	c := client(t, url, token, 50)
	refs := emu.Refs()[:120]
	refs[7] = "component:default/missing"
	refs[8] = "User:Default/User-000001" // any case; answered under the canonical ref
	emu.ResetRequests()
	i := 0
	for f, err := range c.FetchByRefs(context.Background(), refs, nil) {
		if err != nil {
			t.Fatal(err)
		}
		want := strings.ToLower(refs[i])
		if f.Ref != want {
			t.Fatalf("item %d is %s, want %s", i, f.Ref, want)
		}
		if (f.Entity == nil) != (i == 7) {
			t.Fatalf("item %d (%s): entity %v", i, f.Ref, f.Entity)
		}
		if f.Entity != nil {
			if r, _ := catalog.RefOf(f.Entity); r.String() != want {
				t.Fatalf("item %d: body of %s", i, r)
			}
		}
		i++
	}
	if i != 120 || emu.Requests()["by-refs"] != 3 {
		t.Errorf("%d items in %d requests, want 120 in 3", i, emu.Requests()["by-refs"])
	}

	t.Run("fails in order", func(t *testing.T) {
		emu, url := start(t, 300)
		emu.FailAfter(1, 500)
		n := 0
		var last error
		for _, err := range client(t, url, token, 50).FetchByRefs(context.Background(), emu.Refs()[:120], []string{"metadata.name"}) {
			if err != nil {
				last = err
				break
			}
			n++
		}
		var ae *catalog.APIError
		if n != 50 || !errors.As(last, &ae) || !strings.Contains(last.Error(), "50..99") {
			t.Errorf("%d entities, then %v; want 50, then the error of the second chunk", n, last)
		}
	})
	t.Run("bad ref", func(t *testing.T) {
		for _, err := range c.FetchByRefs(context.Background(), []string{"no-kind"}, nil) {
			if err == nil || !strings.Contains(err.Error(), "ref 0") {
				t.Errorf("err = %v", err)
			}
		}
	})
	t.Run("early stop", func(t *testing.T) {
		emu, url := start(t, 300)
		for range client(t, url, token, 50).FetchByRefs(context.Background(), emu.Refs(), nil) {
			break
		}
		time.Sleep(50 * time.Millisecond)
		if got := emu.Requests()["by-refs"]; got > 2 {
			t.Errorf("%d by-refs requests for a fetch stopped in its first chunk", got)
		}
	})
}

// BenchmarkVersions100k measures the cheap listing of 100k generated
// entities against the emulator (client and emulator in one process).
func BenchmarkVersions100k(b *testing.B) {
	emu := catalogtest.New(catalogtest.Options{Token: token, Seed: 1})
	if err := emu.AddGenerated(100_000, 1); err != nil {
		b.Fatal(err)
	}
	url := serveEmu(b, emu)
	c := client(b, url, token, 500)
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		for _, err := range c.Scan(context.Background(), catalog.Query{ExcludeTotal: true}).Versions() {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != 100_000 {
			b.Fatal(fmt.Sprint(n))
		}
	}
}
