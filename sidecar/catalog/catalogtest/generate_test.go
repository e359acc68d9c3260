package catalogtest_test

import (
	"testing"

	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
)

func TestGenerateIsDeterministicAndValid(t *testing.T) {
	t.Parallel()
	a := catalogtest.New(catalogtest.Options{Seed: 3})
	if err := a.UpsertAll(catalogtest.Generate(2000, 7)); err != nil {
		t.Fatal(err)
	}
	if a.Len() != 2000 {
		t.Fatalf("Len = %d", a.Len())
	}
	g, ok := a.Get("group:default/group-000000")
	if !ok || len(g["relations"].([]any)) == 0 {
		t.Fatalf("group-000000 has no relations: %v", g)
	}
	b := catalogtest.New(catalogtest.Options{Seed: 3})
	if err := b.UpsertAll(catalogtest.Generate(2000, 7)); err != nil {
		t.Fatal(err)
	}
	x, _ := b.Get("group:default/group-000000")
	if x["metadata"].(map[string]any)["etag"] != g["metadata"].(map[string]any)["etag"] {
		t.Errorf("same seed, different etag")
	}
}

func BenchmarkUpsert100k(b *testing.B) {
	for b.Loop() {
		e := catalogtest.New(catalogtest.Options{Seed: 1})
		if err := e.UpsertAll(catalogtest.Generate(100_000, 1)); err != nil {
			b.Fatal(err)
		}
	}
}
