package porttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/port"
)

// fixture returns an emulator with blueprints system, service (optional
// relations), component (a required relation) and inherit (inherited
// ownership), the team "platform", the system "sys1", the service "svc1"
// and the component "comp1" that requires sys1.
func fixture(t testing.TB) *Emulator {
	t.Helper()
	e := New(Options{})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.PutBlueprint(port.Blueprint{Identifier: "system", Title: "System", Schema: port.BlueprintSchema{Properties: map[string]port.Property{}}}))
	must(e.PutBlueprint(port.Blueprint{Identifier: "service", Title: "Service",
		Schema: port.BlueprintSchema{Properties: map[string]port.Property{
			"language":  {Type: "string", Enum: []any{"Go", "Python"}},
			"port":      {Type: "number", Extra: map[string]any{"minimum": 1, "maximum": 65535}},
			"url":       {Type: "string", Format: "url"},
			"tags":      {Type: "array", Items: map[string]any{"type": "string"}},
			"lifecycle": {Type: "string", Default: "production"},
		}},
		Relations: map[string]port.Relation{
			"system": {Target: "system"},
			"deps":   {Target: "service", Many: true},
		}}))
	must(e.PutBlueprint(port.Blueprint{Identifier: "component", Title: "Component",
		Schema:    port.BlueprintSchema{Properties: map[string]port.Property{}},
		Relations: map[string]port.Relation{"system_req": {Target: "system", Required: true}}}))
	must(e.PutBlueprint(port.Blueprint{Identifier: "inherit", Title: "Inherit",
		Schema: port.BlueprintSchema{Properties: map[string]port.Property{}},
		Extra:  map[string]any{"ownership": map[string]any{"type": "Inherited", "path": "x"}}}))
	for _, p := range []struct {
		bp string
		e  port.Entity
	}{
		{"_team", port.Entity{Identifier: "platform"}},
		{"system", port.Entity{Identifier: "sys1", Title: "System 1"}},
		{"service", port.Entity{Identifier: "svc1", Relations: map[string]any{"system": "sys1"}}},
		{"component", port.Entity{Identifier: "comp1", Relations: map[string]any{"system_req": "sys1"}}},
	} {
		if _, err := e.PutEntity(p.bp, p.e, "fixture", false); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// token gets an access token over HTTP.
func token(t testing.TB, e *Emulator) string {
	t.Helper()
	rec := httptest.NewRecorder()
	body := `{"clientId":"` + e.ClientID() + `","clientSecret":"` + e.ClientSecret() + `"}`
	e.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/auth/access_token", strings.NewReader(body)))
	var out struct{ AccessToken string }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.AccessToken == "" {
		t.Fatalf("no token: %d %s", rec.Code, rec.Body)
	}
	return out.AccessToken
}

// do sends a request in-process and returns the status and the decoded
// envelope.
func do(t testing.TB, e *Emulator, auth, method, target, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	req.Header.Set("User-Agent", "conformance/1")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: the answer is not JSON: %q", method, target, rec.Body.String())
	}
	return rec.Code, out, rec.Header()
}

func bulkOf(n int) string {
	var b strings.Builder
	b.WriteString(`{"entities":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"identifier":"b` + string(rune('a'+i%26)) + strings.Repeat("x", i) + `"}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

// Test7PathEscaping checks that escaped identifiers in paths round-trip
// (checklist 7).
func Test7PathEscaping(t *testing.T) {
	t.Parallel()
	e := fixture(t)
	tok := token(t, e)
	for _, id := range []string{"a/b", "a+b", "a:b@c=d.e", `back\slash`, "ünï"} {
		body, _ := json.Marshal(map[string]any{"identifier": id})
		if st, out, _ := do(t, e, tok, "POST", "/v1/blueprints/system/entities?upsert=true", string(body)); st != 201 {
			t.Fatalf("create %q: %d %v", id, st, out)
		}
		esc := strings.NewReplacer("/", "%2F", "+", "%2B", `\`, "%5C").Replace(id)
		st, out, _ := do(t, e, tok, "GET", "/v1/blueprints/system/entities/"+esc, "")
		if st != 200 || out["entity"].(map[string]any)["identifier"] != id {
			t.Fatalf("get %q as %q: %d %v", id, esc, st, out)
		}
	}
	// A literal '+' in a path is a plus, not a space.
	if st, _, _ := do(t, e, tok, "GET", "/v1/blueprints/system/entities/a+b", ""); st != 200 {
		t.Fatalf("literal + in path: %d", st)
	}
}

func TestMergeAndReplace(t *testing.T) {
	t.Parallel()
	e := fixture(t)
	tok := token(t, e)
	do(t, e, tok, "POST", "/v1/blueprints/service/entities?upsert=true", `{"identifier":"m","title":"M","properties":{"language":"Go","port":80}}`)
	do(t, e, tok, "POST", "/v1/blueprints/service/entities?upsert=true&merge=true", `{"identifier":"m","properties":{"port":81}}`)
	r, _ := e.Entity("service", "m")
	if r.Entity.Title != "M" || r.Entity.Properties["language"] != "Go" || r.Entity.Properties["port"] != 81.0 {
		t.Fatalf("merge lost fields: %+v", r.Entity)
	}
	do(t, e, tok, "POST", "/v1/blueprints/service/entities?upsert=true", `{"identifier":"m","properties":{"port":82}}`)
	r, _ = e.Entity("service", "m")
	if r.Entity.Title != "" || r.Entity.Properties["language"] != nil || r.Entity.Properties["port"] != 82.0 {
		t.Fatalf("replace kept fields: %+v", r.Entity)
	}
	do(t, e, tok, "POST", "/v1/blueprints/service/entities?upsert=true", `{"identifier":"d"}`)
	if d, _ := e.Entity("service", "d"); d.Entity.Properties["lifecycle"] != "production" {
		t.Fatalf("default not applied on create: %+v", d.Entity.Properties)
	}
	if got := r.DataSources; len(got) != 1 || got[0] != "conformance/1" {
		t.Fatalf("data sources %v", got)
	}
	if _, err := e.PutEntity("service", port.Entity{Identifier: "m", Properties: map[string]any{"port": 9}}, "ui-user", true); err != nil {
		t.Fatal(err)
	}
	r, _ = e.Entity("service", "m")
	if len(r.DataSources) != 2 || r.DataSources[1] != "ui-user" || r.Entity.Properties["port"] != 9.0 {
		t.Fatalf("direct edit: %+v %v", r.Entity, r.DataSources)
	}
	// validation_only stores nothing
	do(t, e, tok, "POST", "/v1/blueprints/service/entities?upsert=true&validation_only=true", `{"identifier":"vo"}`)
	if _, ok := e.Entity("service", "vo"); ok {
		t.Fatal("validation_only stored the entity")
	}
}

func TestDeleteClearsOptionalRelations(t *testing.T) {
	t.Parallel()
	e := fixture(t)
	tok := token(t, e)
	do(t, e, tok, "POST", "/v1/blueprints/service/entities?upsert=true", `{"identifier":"s2","relations":{"deps":["svc1"]}}`)
	if st, out, _ := do(t, e, tok, "DELETE", "/v1/blueprints/service/entities/svc1", ""); st != 200 {
		t.Fatal(st, out)
	}
	r, _ := e.Entity("service", "s2")
	if deps, _ := r.Entity.Relations["deps"].([]any); len(deps) != 0 {
		t.Fatalf("deps still %v", deps)
	}
	do(t, e, tok, "DELETE", "/v1/blueprints/system/entities/sys1?delete_dependents=true", "")
	if _, ok := e.Entity("component", "comp1"); ok {
		t.Fatal("required dependent not deleted")
	}
}

func TestSearchPagingAndOperators(t *testing.T) {
	t.Parallel()
	e := fixture(t)
	tok := token(t, e)
	for i := range 45 {
		lang := "Go"
		if i%3 == 0 {
			lang = "Python"
		}
		body, _ := json.Marshal(map[string]any{"identifier": "p" + string(rune('A'+i/26)) + string(rune('a'+i%26)), "properties": map[string]any{"language": lang, "port": i + 1}})
		do(t, e, tok, "POST", "/v1/blueprints/service/entities?upsert=true", string(body))
	}
	seen := 0
	from := ""
	pages := 0
	for {
		body, _ := json.Marshal(map[string]any{"limit": 10, "from": from, "include": []string{"$identifier", "port"},
			"query": map[string]any{"combinator": "and", "rules": []any{map[string]any{"property": "language", "operator": "=", "value": "Go"}}}})
		if from == "" {
			body = bytes.Replace(body, []byte(`"from":"",`), nil, 1)
		}
		st, out, _ := do(t, e, tok, "POST", "/v1/blueprints/service/entities/search", string(body))
		if st != 200 {
			t.Fatal(st, out)
		}
		pages++
		seen += len(out["entities"].([]any))
		next, _ := out["next"].(string)
		if next == "" {
			break
		}
		from = next
	}
	if seen != 30 || pages != 3 {
		t.Fatalf("saw %d entities in %d pages, want 30 in 3", seen, pages)
	}
	for _, tc := range []struct {
		rule map[string]any
		want int
	}{
		{map[string]any{"property": "port", "operator": ">", "value": 40}, 5},
		{map[string]any{"property": "port", "operator": "<=", "value": 3}, 3},
		{map[string]any{"property": "$createdAt", "operator": "between", "value": map[string]any{"preset": "today"}}, 46},
		{map[string]any{"property": "$identifier", "operator": "beginsWith", "value": "pB"}, 19},
		{map[string]any{"property": "$datasource", "operator": "contains", "value": "conformance"}, 45},
		{map[string]any{"property": "language", "operator": "in", "value": []any{"Python"}}, 15},
		{map[string]any{"property": "url", "operator": "isEmpty"}, 46},
		{map[string]any{"operator": "relatedTo", "blueprint": "system", "value": "sys1", "direction": "downstream"}, 1},
	} {
		body, _ := json.Marshal(map[string]any{"query": map[string]any{"combinator": "and", "rules": []any{tc.rule}}})
		st, out, _ := do(t, e, tok, "POST", "/v1/blueprints/service/entities/search", string(body))
		if got, _ := out["entities"].([]any); st != 200 || len(got) != tc.want {
			t.Errorf("rule %v: %d, %d entities, want %d (%v)", tc.rule, st, len(got), tc.want, out["message"])
		}
	}
}

func TestFaultsBudgetAndAdmin(t *testing.T) {
	t.Parallel()
	e := fixture(t)
	tok := token(t, e)
	e.InjectFaults(FaultSpec{Status: 503, Count: 2})
	for i, want := range []int{503, 503, 200} {
		if st, _, _ := do(t, e, tok, "GET", "/v1/blueprints", ""); st != want {
			t.Fatalf("request %d: %d, want %d", i, st, want)
		}
	}
	e.InjectFaults(FaultSpec{Status: 429, Share: 0.5, Count: 4, RetryAfter: time.Second})
	got := []int{}
	for range 4 {
		st, _, h := do(t, e, tok, "GET", "/v1/blueprints", "")
		got = append(got, st)
		if st == 429 && h.Get("Retry-After") != "1" {
			t.Fatalf("Retry-After %q", h.Get("Retry-After"))
		}
	}
	if got[0] != 200 || got[1] != 429 || got[2] != 200 || got[3] != 429 {
		t.Fatalf("share 0.5 gave %v", got)
	}
	e.ClearFaults()
	e.InjectFaults(FaultSpec{ExpireToken: true})
	if st, _, _ := do(t, e, tok, "GET", "/v1/blueprints", ""); st != 401 {
		t.Fatalf("expired token: %d", st)
	}
	tok = token(t, e)
	e.InjectFaults(FaultSpec{Status: 502, For: time.Hour, Route: "POST /v1/blueprints/{b}/entities/bulk"})
	if st, _, _ := do(t, e, tok, "GET", "/v1/blueprints", ""); st != 200 {
		t.Fatalf("route filter: %d", st)
	}
	if st, _, _ := do(t, e, tok, "POST", "/v1/blueprints/service/entities/bulk?upsert=true", bulkOf(1)); st != 502 {
		t.Fatalf("route fault: %d", st)
	}
	e.ClearFaults()
	e.ResetRequests()
	e.SetRateBudget(3, time.Hour)
	for i := range 4 {
		st, _, h := do(t, e, tok, "GET", "/v1/blueprints", "")
		if i < 3 && st != 200 || i == 3 && (st != 429 || h.Get("Retry-After") == "") {
			t.Fatalf("budget request %d: %d", i, st)
		}
	}
	c := e.Requests()
	if c.OverBudget != 1 || c.Total != 4 || c.Writes != 0 || c.ByRoute["GET /v1/blueprints"] != 4 {
		t.Fatalf("counts %+v", c)
	}
	// Admin routes over HTTP.
	srv := httptest.NewServer(e)
	defer srv.Close()
	for _, a := range []struct{ method, path, body string }{
		{"PUT", "/_emulator/rate-budget", `{"limit":0}`},
		{"POST", "/_emulator/faults", `{"status":503,"count":1}`},
		{"PUT", "/_emulator/entities/system?datasource=ui", `{"identifier":"via-admin"}`},
		{"GET", "/_emulator/requests", ""},
		{"GET", "/_emulator/dump", ""},
		{"POST", "/_emulator/expire-tokens", ""},
		{"DELETE", "/_emulator/entities/system/via-admin", ""},
		{"POST", "/_emulator/reset", ""},
	} {
		req, _ := http.NewRequest(a.method, srv.URL+a.path, strings.NewReader(a.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s %s: %v %v", a.method, a.path, err, resp.Status)
		}
		resp.Body.Close()
	}
	if len(e.Entities("service")) != 0 {
		t.Fatal("reset kept entities")
	}
}

func TestPersistence(t *testing.T) {
	t.Parallel()
	file := t.TempDir() + "/state.json"
	e := New(Options{PersistFile: file})
	if err := e.PutBlueprint(port.Blueprint{Identifier: "system", Title: "S", Schema: port.BlueprintSchema{Properties: map[string]port.Property{}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PutEntity("system", port.Entity{Identifier: "a/b"}, "ds", false); err != nil {
		t.Fatal(err)
	}
	if err := e.Save(); err != nil {
		t.Fatal(err)
	}
	e2, err := Open(Options{PersistFile: file})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := e2.Entity("system", "a/b"); !ok || r.DataSources[0] != "ds" {
		t.Fatalf("not restored: %+v", r)
	}
	if err := writeFile(file, "{bad"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{PersistFile: file}); err == nil {
		t.Fatal("a corrupt file loaded without error")
	}
}

// TestDatasourcePaging pages the datasource listing with a small limit and
// checks the pages join up to the one-page answer, across blueprints.
func TestDatasourcePaging(t *testing.T) {
	t.Parallel()
	e := fixture(t)
	tok := token(t, e)
	for i := range 30 {
		for _, bp := range []string{"system", "service"} {
			body, _ := json.Marshal(map[string]any{"identifier": fmt.Sprintf("ds-%s-%02d", bp, i)})
			if st, out, _ := do(t, e, tok, "POST", "/v1/blueprints/"+bp+"/entities?upsert=true", string(body)); st/100 != 2 {
				t.Fatal(st, out)
			}
		}
	}
	list := func(limit int, from string) ([]string, string) {
		req := map[string]any{"datasource_prefix": "", "datasource_suffix": "", "limit": limit}
		if from != "" {
			req["from"] = from
		}
		body, _ := json.Marshal(req)
		st, out, _ := do(t, e, tok, "POST", "/v1/blueprints/entities/datasource-entities", string(body))
		if st != 200 {
			t.Fatal(st, out)
		}
		var ids []string
		for _, x := range out["entities"].([]any) {
			ids = append(ids, x.(map[string]any)["identifier"].(string))
		}
		next, _ := out["next"].(string)
		return ids, next
	}
	all, next := list(10000, "")
	if next != "" || len(all) < 60 {
		t.Fatalf("one page: %d entities, next %q", len(all), next)
	}
	var paged []string
	from := ""
	for pages := 0; ; pages++ {
		ids, next := list(7, from)
		paged = append(paged, ids...)
		if next == "" {
			break
		}
		if pages > 100 {
			t.Fatal("paging does not end")
		}
		from = next
	}
	if strings.Join(paged, ",") != strings.Join(all, ",") {
		t.Errorf("pages of 7 give %d entities:\n%v\none page gives %d:\n%v", len(paged), paged, len(all), all)
	}
}
