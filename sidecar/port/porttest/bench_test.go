package porttest

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkBulkUpsert measures the emulator's bulk upsert path in-process
// (routing, auth, decoding, validation, storing) for 20-entity requests.
func BenchmarkBulkUpsert(b *testing.B) {
	e := fixture(b)
	tok := token(b, e)
	var bodies []string
	for i := range 500 {
		var sb strings.Builder
		sb.WriteString(`{"entities":[`)
		for j := range 20 {
			if j > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"identifier":"svc-%d-%d","title":"S","properties":{"language":"Go","port":%d,"tags":["a","b"]},"relations":{"system":"sys1"}}`, i, j, j+1)
		}
		sb.WriteString(`]}`)
		bodies = append(bodies, sb.String())
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/blueprints/service/entities/bulk?upsert=true", strings.NewReader(bodies[i%len(bodies)]))
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code, rec.Body.String())
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*20), "ns/entity")
}

// BenchmarkSearchPage measures a search answering a page of 1,000
// catalog-shaped entities (matching a property rule, so that each
// entity's properties are looked into) from a store of 20,000.
func BenchmarkSearchPage(b *testing.B) {
	e, tok := catalogShapeFixture(b)
	loadCatalogShape(b, e, tok, 20_000)
	body := `{"limit":1000,"query":{"combinator":"and","rules":[{"property":"type","operator":"=","value":"service"}]}}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/blueprints/component/entities/search", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code, rec.Body.String())
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/entity")
}

// BenchmarkBulkUpsertCatalogShape measures bulk upserts of 20
// catalog-shaped entities (creations on the first pass over 20,000, then
// replacements), as portbridge's resync sends them.
func BenchmarkBulkUpsertCatalogShape(b *testing.B) {
	e, tok := catalogShapeFixture(b)
	reqs := catalogShapeRequests(b, 20_000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if code, body := sendBulk(e, tok, reqs[i%len(reqs)]); code != 200 {
			b.Fatal(code, body)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*20), "ns/entity")
}
