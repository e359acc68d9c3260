package port_test

import (
	"testing"

	"github.com/portbridge/portbridge/sidecar/port"
)

func BenchmarkEncodeBulk(b *testing.B) {
	ents := entities(1000, 200)
	b.ReportAllocs()
	for b.Loop() {
		bodies, _ := port.EncodeBulk("service", ents)
		if len(bodies) != 50 {
			b.Fatal(len(bodies))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ents)), "ns/entity")
}
