package catalogtest_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
)

func TestAdminRoutes(t *testing.T) {
	t.Parallel()
	emu := catalogtest.New(catalogtest.Options{Token: "admin-test-token"})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	do := func(method, path, body string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	yaml := "apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata: {name: team}\nspec: {type: team, children: []}\n---\n" +
		"apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: svc}\nspec: {type: service, lifecycle: production, owner: team}\n"
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/_emulator/entities", yaml, 204},
		{"POST", "/_emulator/entities", `{"apiVersion":"backstage.io/v1alpha1","kind":"Component","metadata":{},"spec":{}}`, 400},
		{"POST", "/_emulator/entities", `{"apiVersion":"backstage.io/v1alpha1","kind":"Component","metadata":{"name":"x"},"spec":{"type":"service"}}`, 400},
		{"POST", "/_emulator/entities", `{"apiVersion":"backstage.io/v1alpha1","kind":"Widget","metadata":{"name":"x"}}`, 400},
		{"POST", "/_emulator/entities", "key: [unclosed", 400},
		{"POST", "/_emulator/entities", "", 400},
		{"POST", "/_emulator/entities", `[{"apiVersion":"backstage.io/v1alpha1","kind":"Group","metadata":{"name":"other"},"spec":{"type":"team","children":[]}}]`, 204},
		{"POST", "/_emulator/entities", `[{"apiVersion":"backstage.io/v1alpha1","kind":"Group","metadata":{"name":"other"},"spec":{"type":"team","children":[]}}, 3]`, 400},
		{"DELETE", "/_emulator/entities/component/default/nope", "", 404},
		{"GET", "/_emulator/nothing", "", 404},
	} {
		if got := do(tc.method, tc.path, tc.body); got != tc.want {
			t.Errorf("%s %s %.40q = %d, want %d", tc.method, tc.path, tc.body, got, tc.want)
		}
	}
	g, ok := emu.Get("group:team")
	if !ok || len(g["relations"].([]any)) != 1 {
		t.Fatalf("group after POST: %v", g)
	}
	if got := do("DELETE", "/_emulator/entities/component/default/svc", ""); got != 204 {
		t.Fatalf("delete = %d", got)
	}
	g2, _ := emu.Get("group:team")
	if len(g2["relations"].([]any)) != 0 || g2["metadata"].(map[string]any)["etag"] == g["metadata"].(map[string]any)["etag"] {
		t.Errorf("group after delete: %v", g2)
	}
	// stats: entities, requests per route and work; DELETE resets
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/catalog/entities/by-query?limit=5", nil)
	req.Header.Set("Authorization", "Bearer admin-test-token")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("by-query: %v", err)
	}
	var st catalogtest.Stats
	getStats := func() {
		resp, err := http.Get(srv.URL + "/_emulator/stats")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		st = catalogtest.Stats{}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
	}
	getStats()
	if st.Entities != 2 || st.Requests["by-query"] != 1 || st.Work < 2 {
		t.Errorf("stats = %+v", st)
	}
	if got := do("DELETE", "/_emulator/stats", ""); got != 204 {
		t.Errorf("reset stats = %d", got)
	}
	getStats()
	if len(st.Requests) != 0 || st.Work != 0 {
		t.Errorf("stats after reset = %+v", st)
	}
	if err := emu.Delete("svc"); err == nil {
		t.Errorf("Delete of a ref without kind accepted")
	}
	if err := emu.Upsert(catalog.Entity{"kind": "Component"}); err == nil {
		t.Errorf("entity without metadata accepted")
	}
}
