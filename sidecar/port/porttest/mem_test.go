package porttest

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/portbridge/portbridge/sidecar/port"
)

// catalogShapeFixture returns an emulator with blueprints shaped like
// portbridge's default ones for Backstage (user, group, system,
// component) and an access token.
func catalogShapeFixture(t testing.TB) (*Emulator, string) {
	t.Helper()
	e := New(Options{})
	common := func() map[string]port.Property {
		return map[string]port.Property{
			"description": {Type: "string"},
			"annotations": {Type: "object"},
			"labels":      {Type: "object"},
			"links":       {Type: "array", Items: map[string]any{"type": "string"}},
			"tags":        {Type: "array", Items: map[string]any{"type": "string"}},
			"type":        {Type: "string"},
			"lifecycle":   {Type: "string"},
			"email":       {Type: "string"},
		}
	}
	for _, bp := range []port.Blueprint{
		{Identifier: "user", Title: "User", Schema: port.BlueprintSchema{Properties: common()}},
		{Identifier: "group", Title: "Group", Schema: port.BlueprintSchema{Properties: common()},
			Relations: map[string]port.Relation{"members": {Target: "user", Many: true}, "parent": {Target: "group"}}},
		{Identifier: "system", Title: "System", Schema: port.BlueprintSchema{Properties: common()},
			Relations: map[string]port.Relation{"owningGroup": {Target: "group"}, "owningUser": {Target: "user"}}},
		{Identifier: "component", Title: "Component", Schema: port.BlueprintSchema{Properties: common()},
			Relations: map[string]port.Relation{
				"owningGroup": {Target: "group"}, "owningUser": {Target: "user"}, "system": {Target: "system"},
				"dependsOnComponent": {Target: "component", Many: true}, "subcomponentOf": {Target: "component"},
			}},
	} {
		if err := e.PutBlueprint(bp); err != nil {
			t.Fatal(err)
		}
	}
	return e, token(t, e)
}

// catalogShapeEntity returns the i-th of n synthetic entities in the shape
// portbridge's default mapping gives Backstage's entities (as
// catalogtest's generator makes them): 40 % users, 10 % groups, 5 %
// systems, the rest components, each pointing at entities written
// before it.
func catalogShapeEntity(i, n int) (string, map[string]any) {
	users, groups, systems := max(n*40/100, 1), max(n*10/100, 1), max(n*5/100, 1)
	name := func(kind string, j int) string { return fmt.Sprintf("%s:default/%s-%06d", kind, kind, j) }
	props := func(kind string, j int) map[string]any {
		short := fmt.Sprintf("%s-%06d", kind, j)
		return map[string]any{
			"annotations": map[string]any{
				"backstage.io/source-location": "url:https://git.example.com/org/" + short + "/",
				"github.com/project-slug":      "org/" + short,
			},
			"description": "Synthetic " + kind + " " + short + ". " + strings.Repeat("Lorem ipsum dolor sit amet. ", 1+j%5),
			"labels":      map[string]any{"cost-center": fmt.Sprintf("cc-%03d", j%200)},
			"links":       []any{"https://dash.example.com/" + short},
			"tags":        []any{[]string{"go", "python", "kotlin", "typescript"}[j%4], fmt.Sprintf("tier-%d", 1+j%3)},
			"type":        nil,
		}
	}
	ent := func(kind string, j int, rels map[string]any) (string, map[string]any) {
		p := props(kind, j)
		switch kind {
		case "user":
			p["email"] = fmt.Sprintf("user-%d@example.com", j)
		case "group":
			p["type"] = "team"
			p["email"] = fmt.Sprintf("team-%d@example.com", j)
		case "component":
			p["type"], p["lifecycle"] = "service", []string{"production", "experimental"}[j%2]
		}
		return kind, map[string]any{"identifier": name(kind, j), "title": strings.ToUpper(kind[:1]) + fmt.Sprintf("%s-%06d", kind[1:], j),
			"properties": p, "relations": rels}
	}
	switch {
	case i < users:
		return ent("user", i, map[string]any{})
	case i < users+groups:
		j := i - users
		members := []any{}
		for k := range 6 {
			members = append(members, name("user", (j*7+k*13)%users))
		}
		var parent any
		if j > 0 {
			parent = name("group", j/2)
		}
		return ent("group", j, map[string]any{"members": members, "parent": parent})
	case i < users+groups+systems:
		j := i - users - groups
		return ent("system", j, map[string]any{"owningGroup": name("group", j%groups), "owningUser": nil})
	}
	j := i - users - groups - systems
	deps := []any{}
	if j > 1 {
		deps = append(deps, name("component", j/2), name("component", j/3))
	}
	var sub any
	if j > 0 && j%10 == 0 {
		sub = name("component", j-1)
	}
	return ent("component", j, map[string]any{"owningGroup": name("group", j%groups), "owningUser": nil,
		"system": name("system", j%systems), "dependsOnComponent": deps, "subcomponentOf": sub})
}

// loadCatalogShape writes n catalog-shaped entities through the bulk
// upsert route, 20 a request (Port's maximum), as portbridge does.
func loadCatalogShape(t testing.TB, e *Emulator, tok string, n int) {
	t.Helper()
	for _, req := range catalogShapeRequests(t, n) {
		if code, body := sendBulk(e, tok, req); code != 200 {
			t.Fatalf("bulk upsert to %s: %d %s", req.bp, code, body)
		}
	}
}

// bulkRequest is the blueprint and body of a bulk upsert.
type bulkRequest struct{ bp, body string }

// catalogShapeRequests returns the bulk upserts that write n
// catalog-shaped entities, 20 a request.
func catalogShapeRequests(t testing.TB, n int) []bulkRequest {
	t.Helper()
	var out []bulkRequest
	var batch []any
	bp := ""
	flush := func() {
		if len(batch) == 0 {
			return
		}
		body, err := json.Marshal(map[string]any{"entities": batch})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bulkRequest{bp, string(body)})
		batch = nil
	}
	for i := range n {
		ebp, ent := catalogShapeEntity(i, n)
		if ebp != bp || len(batch) == 20 {
			flush()
			bp = ebp
		}
		batch = append(batch, ent)
	}
	flush()
	return out
}

// sendBulk sends a bulk upsert as portbridge's exporter and returns the
// status and the answer.
func sendBulk(e *Emulator, tok string, r bulkRequest) (int, string) {
	req := httptest.NewRequest("POST", "/v1/blueprints/"+r.bp+"/entities/bulk?upsert=true", strings.NewReader(r.body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("User-Agent", "portbridge/backstage/dev/portbridge/exporter")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// maxBytesPerEntity bounds the live heap per catalog-shaped entity: about
// 500 B with bodies packed and metas shared, 1,090 B with properties and
// relations kept as plain JSON, 2,840 B when they were decoded maps (and
// the reverse index a map per target).
const maxBytesPerEntity = 900

// TestMemoryPerEntity counts the live heap the emulator holds per stored
// entity (HeapAlloc after a GC, before and after storing them; not a
// timing), once written and again after every entity was rewritten.
func TestMemoryPerEntity(t *testing.T) {
	const n = 20_000
	e, tok := catalogShapeFixture(t)
	before := heapAlloc()
	for _, pass := range []string{"written", "rewritten"} {
		loadCatalogShape(t, e, tok, n)
		per := float64(int64(heapAlloc())-int64(before)) / n
		t.Logf("%s: %.0f B of live heap per stored entity (%d entities)", pass, per, n)
		if per > maxBytesPerEntity {
			t.Errorf("%s: the emulator holds %.0f B per entity, want at most %d", pass, per, maxBytesPerEntity)
		}
	}
	if got := len(e.Entities("component")); got != n-n*55/100 {
		t.Fatalf("%d components stored, want %d", got, n-n*55/100)
	}
	runtime.KeepAlive(e)
}
