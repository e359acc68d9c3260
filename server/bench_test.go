package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/proto/portbridge/v1/portbridgev1connect"
	"github.com/portbridge/portbridge/server/servertest"
	"github.com/portbridge/portbridge/sidecar/limits"
)

// benchEntity is a Component about the size and shape the catalog API
// returns (about 1.3 KB as JSON).
func benchEntity(b *testing.B, i int) *portbridgev1.Change {
	b.Helper()
	name := fmt.Sprintf("service-%05d", i)
	e, err := structpb.NewStruct(map[string]any{
		"apiVersion": "backstage.io/v1alpha1",
		"kind":       "Component",
		"metadata": map[string]any{
			"name": name, "namespace": "default", "uid": fmt.Sprintf("0b7c1a52-0000-4000-8000-%012d", i), "etag": "a1b2c3d4e5f6",
			"title": "Service " + name, "description": "A service that does one thing well, for the benchmark.",
			"tags": []any{"go", "grpc", "payments"},
			"annotations": map[string]any{
				"backstage.io/managed-by-location":        "url:https://github.com/acme/" + name + "/blob/main/catalog-info.yaml",
				"backstage.io/managed-by-origin-location": "url:https://github.com/acme/" + name + "/blob/main/catalog-info.yaml",
				"github.com/project-slug":                 "acme/" + name,
				"backstage.io/techdocs-ref":               "dir:.",
			},
			"links": []any{map[string]any{"url": "https://dashboards.acme.io/" + name, "title": "Dashboard"}},
		},
		"spec": map[string]any{"type": "service", "lifecycle": "production", "owner": "group:default/team-a", "system": "payments",
			"providesApis": []any{"api:default/" + name + "-api"}, "dependsOn": []any{"resource:default/payments-db"}},
		"relations": []any{
			map[string]any{"type": "ownedBy", "targetRef": "group:default/team-a"},
			map[string]any{"type": "partOf", "targetRef": "system:default/payments"},
			map[string]any{"type": "providesApi", "targetRef": "api:default/" + name + "-api"},
			map[string]any{"type": "dependsOn", "targetRef": "resource:default/payments-db"},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	return &portbridgev1.Change{EntityRef: "component:default/" + name, Change: &portbridgev1.Change_Upserted{Upserted: &portbridgev1.Upserted{Entity: e}}}
}

func benchBatch(b *testing.B, n int) []*portbridgev1.Change {
	out := make([]*portbridgev1.Change, n)
	for i := range out {
		out[i] = benchEntity(b, i)
	}
	return out
}

// BenchmarkPublishChanges measures one PublishChanges round trip over the
// loopback (no fsync: the Backend is in memory), per protocol and batch size.
func BenchmarkPublishChanges(b *testing.B) {
	protocols := []struct {
		name string
		opt  []connect.ClientOption
	}{
		{"connect-proto", nil},
		{"connect-json", []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	}
	for _, p := range protocols {
		for _, n := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("%s/batch=%d", p.name, n), func(b *testing.B) {
				url, _ := startServer(b, defaultConfig(), &discardBackend{})
				c := portbridgev1connect.NewBridgeServiceClient(h2cClient(b), url, append(p.opt, bearer(testToken))...)
				req := &portbridgev1.PublishChangesRequest{Changes: benchBatch(b, n)}
				ctx := context.Background()
				b.ResetTimer()
				for b.Loop() {
					if _, err := c.PublishChanges(ctx, connect.NewRequest(req)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "changes/s")
			})
		}
	}
}

// BenchmarkStreamChanges sends 1000 changes as one stream of messages of
// the given size, to compare with PublishChanges/batch=1000.
func BenchmarkStreamChanges(b *testing.B) {
	const total = 1000
	for _, per := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("grpc/per-message=%d", per), func(b *testing.B) {
			url, _ := startServer(b, defaultConfig(), &discardBackend{})
			c := portbridgev1connect.NewBridgeServiceClient(h2cClient(b), url, connect.WithGRPC(), bearer(testToken))
			all := benchBatch(b, total)
			var msgs []*portbridgev1.StreamChangesRequest
			for i := 0; i < total; i += per {
				msgs = append(msgs, &portbridgev1.StreamChangesRequest{Changes: all[i : i+per]})
			}
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				stream := c.StreamChanges(ctx)
				for _, m := range msgs {
					if err := stream.Send(m); err != nil {
						break
					}
				}
				if _, err := stream.CloseAndReceive(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "changes/s")
		})
	}
}

// BenchmarkValidateBatch measures the server-side validation of 1000 changes.
func BenchmarkValidateBatch(b *testing.B) {
	batch := benchBatch(b, 1000)
	for b.Loop() {
		if vs := (validator{lim: limits.Default(), now: time.Now()}).validateBatch("", batch, ""); len(vs) != 0 {
			b.Fatal(vs)
		}
	}
}

// discardBackend accepts everything and keeps nothing, so benchmarks measure
// the server and not a growing in-memory queue.
type discardBackend struct{ servertest.Backend }

func (d *discardBackend) Publish(_ context.Context, changes []*portbridgev1.Change, _ bool, _ string) (uint64, error) {
	return uint64(len(changes)), nil
}
