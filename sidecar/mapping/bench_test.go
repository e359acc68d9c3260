package mapping

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"os/exec"
	"runtime"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// BenchmarkMappingVsJQ maps the same generated NDJSON (5,000 entities from
// the example catalog) with the default mapping through our engine on every
// core and through the jq CLI running JQProgram, and reports both
// throughputs. `make bench` prints portbridge-entities/s next to
// jq-entities/s.
func BenchmarkMappingVsJQ(b *testing.B) {
	jq, err := exec.LookPath("jq")
	if err != nil {
		b.Fatalf("the jq command line tool is not on PATH (apt-get install jq)")
	}
	data := generatedNDJSON(b, 5000)
	m, err := New(DefaultConfig(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var ours, theirs float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o, err := MeasureNDJSON(ctx, m, data, runtime.GOMAXPROCS(0))
		if err != nil {
			b.Fatal(err)
		}
		j, err := MeasureJQ(ctx, jq, m, data)
		if err != nil {
			b.Fatal(err)
		}
		ours += o.PerSecond()
		theirs += j.PerSecond()
	}
	b.ReportMetric(ours/float64(b.N), "portbridge-entities/s")
	b.ReportMetric(theirs/float64(b.N), "jq-entities/s")
	b.ReportMetric(ours/theirs, "x-jq")
}

func BenchmarkMap(b *testing.B) {
	m, err := New(DefaultConfig(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	catalog := exampleCatalog(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Map(ctx, catalog[i%len(catalog)])
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entities/s")
}

// BenchmarkHash compares the two candidate hashes over the canonical JSON of
// a typical mapped component; xxhash was chosen.
func BenchmarkHash(b *testing.B) {
	m, err := New(DefaultConfig(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	var e map[string]any
	for _, x := range exampleCatalog(b) {
		if refOf(x) == "component:default/artist-lookup" {
			e = x
		}
	}
	data := m.Map(context.Background(), e).Entities[0].JSON
	b.Run("xxhash64", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			xxhash.Sum64(data)
		}
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			sha256.Sum256(data)
		}
	})
	mapped := m.Map(context.Background(), e).Entities[0].Entity
	b.Run("canonical-encode", func(b *testing.B) {
		buf := make([]byte, 0, 4096)
		for i := 0; i < b.N; i++ {
			buf, _ = appendEntity(buf[:0], &mapped)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, _ = json.Marshal(mapped)
		}
	})
}
