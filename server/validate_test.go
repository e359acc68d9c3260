package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/proto/portbridge/v1/portbridgev1connect"
	"github.com/portbridge/portbridge/server/servertest"
	"github.com/portbridge/portbridge/sidecar/limits"
)

func rawUpsert(t *testing.T, ref string, e map[string]any) *portbridgev1.Change {
	t.Helper()
	s, err := structpb.NewStruct(e)
	if err != nil {
		t.Fatal(err)
	}
	return &portbridgev1.Change{EntityRef: ref, Change: &portbridgev1.Change_Upserted{Upserted: &portbridgev1.Upserted{Entity: s}}}
}

func TestPublishValidation(t *testing.T) {
	t.Parallel()
	good := func() *portbridgev1.Change { return del("component:default/good") }
	future := time.Now().Add(time.Hour)
	tests := []struct {
		name   string
		change func(t *testing.T) *portbridgev1.Change // placed at index 1 of a batch of three
		field  string                                  // the first violation's field
		desc   string                                  // part of its description
	}{
		{"missing ref", func(*testing.T) *portbridgev1.Change { return del("") }, "changes[1].entity_ref", "required"},
		{"ref without kind", func(*testing.T) *portbridgev1.Change { return del("default/petstore") }, "changes[1].entity_ref", "kind:namespace/name"},
		{"ref without namespace", func(*testing.T) *portbridgev1.Change { return del("component:petstore") }, "changes[1].entity_ref", "kind:namespace/name"},
		{"ref with empty name", func(*testing.T) *portbridgev1.Change { return del("component:default/") }, "changes[1].entity_ref", "kind:namespace/name"},
		{"ref with extra slash", func(*testing.T) *portbridgev1.Change { return del("component:default/a/b") }, "changes[1].entity_ref", "name contains"},
		{"ref too long", func(*testing.T) *portbridgev1.Change { return del("component:default/" + strings.Repeat("a", 300)) }, "changes[1].entity_ref", "longer than"},
		{"no change", func(*testing.T) *portbridgev1.Change { return &portbridgev1.Change{EntityRef: "component:default/a"} }, "changes[1].change", "one of upserted or deleted"},
		{"upsert without entity", func(*testing.T) *portbridgev1.Change {
			return &portbridgev1.Change{EntityRef: "component:default/a", Change: &portbridgev1.Change_Upserted{Upserted: &portbridgev1.Upserted{}}}
		}, "changes[1].upserted.entity", "required"},
		{"upsert without kind", func(t *testing.T) *portbridgev1.Change {
			return rawUpsert(t, "component:default/a", map[string]any{"metadata": map[string]any{"name": "a"}})
		}, "changes[1].upserted.entity.kind", "required"},
		{"upsert with numeric kind", func(t *testing.T) *portbridgev1.Change {
			return rawUpsert(t, "component:default/a", map[string]any{"kind": 3, "metadata": map[string]any{"name": "a"}})
		}, "changes[1].upserted.entity.kind", "must be a string"},
		{"upsert without metadata", func(t *testing.T) *portbridgev1.Change {
			return rawUpsert(t, "component:default/a", map[string]any{"kind": "Component"})
		}, "changes[1].upserted.entity.metadata", "required"},
		{"upsert with metadata list", func(t *testing.T) *portbridgev1.Change {
			return rawUpsert(t, "component:default/a", map[string]any{"kind": "Component", "metadata": []any{"a"}})
		}, "changes[1].upserted.entity.metadata", "must be an object"},
		{"upsert without name", func(t *testing.T) *portbridgev1.Change {
			return rawUpsert(t, "component:default/a", map[string]any{"kind": "Component", "metadata": map[string]any{}})
		}, "changes[1].upserted.entity.metadata.name", "required"},
		{"upsert with empty name", func(t *testing.T) *portbridgev1.Change {
			return rawUpsert(t, "component:default/a", map[string]any{"kind": "Component", "metadata": map[string]any{"name": ""}})
		}, "changes[1].upserted.entity.metadata.name", "must not be empty"},
		{"upsert with numeric namespace", func(t *testing.T) *portbridgev1.Change {
			return rawUpsert(t, "component:default/a", map[string]any{"kind": "Component", "metadata": map[string]any{"name": "a", "namespace": 1}})
		}, "changes[1].upserted.entity.metadata.namespace", "must be a string"},
		{"kind differs from ref", func(t *testing.T) *portbridgev1.Change { return upsert(t, "component:default/a", "API", "", "a") },
			"changes[1].upserted.entity.kind", `"API" does not match entity_ref "component:default/a"`},
		{"namespace differs from ref", func(t *testing.T) *portbridgev1.Change {
			return upsert(t, "component:default/a", "Component", "prod", "a")
		},
			"changes[1].upserted.entity.metadata.namespace", "does not match"},
		{"default namespace differs from ref", func(t *testing.T) *portbridgev1.Change { return upsert(t, "component:prod/a", "Component", "", "a") },
			"changes[1].upserted.entity.metadata.namespace", `"default" does not match`},
		{"name differs from ref", func(t *testing.T) *portbridgev1.Change { return upsert(t, "component:default/a", "Component", "", "b") },
			"changes[1].upserted.entity.metadata.name", "does not match"},
		{"uid differs from entity", func(t *testing.T) *portbridgev1.Change {
			c := rawUpsert(t, "component:default/a", map[string]any{"kind": "Component", "metadata": map[string]any{"name": "a", "uid": "u-1"}})
			c.Uid = "u-2"
			return c
		}, "changes[1].uid", "does not match"},
		{"observed in the future", func(*testing.T) *portbridgev1.Change {
			c := del("component:default/a")
			c.ObservedAt = timestamppb.New(future)
			return c
		}, "changes[1].observed_at", "in the future"},
		{"invalid timestamp", func(*testing.T) *portbridgev1.Change {
			c := del("component:default/a")
			c.ObservedAt = &timestamppb.Timestamp{Seconds: 1, Nanos: -5}
			return c
		}, "changes[1].observed_at", "invalid"},
	}
	b := &servertest.Backend{}
	url, _ := startServer(t, defaultConfig(), b)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := portbridgev1connect.NewBridgeServiceClient(h2cClient(t), url, bearer(testToken))
			req := &portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{good(), tt.change(t), good()}}
			_, err := c.PublishChanges(context.Background(), connect.NewRequest(req))
			var cerr *connect.Error
			if !errors.As(err, &cerr) || cerr.Code() != connect.CodeInvalidArgument {
				t.Fatalf("error = %v, want InvalidArgument", err)
			}
			wantMsg := tt.field + ": "
			if !strings.HasPrefix(cerr.Message(), wantMsg) || !strings.Contains(cerr.Message(), tt.desc) {
				t.Errorf("message = %q, want it to start with %q and contain %q", cerr.Message(), wantMsg, tt.desc)
			}
			var found bool
			for _, d := range cerr.Details() {
				v, err := d.Value()
				if err != nil {
					t.Fatal(err)
				}
				if br, ok := v.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 && br.FieldViolations[0].Field == tt.field {
					found = true
				}
			}
			if !found {
				t.Errorf("details %v lack a BadRequest naming %s", cerr.Details(), tt.field)
			}
		})
	}
	t.Cleanup(func() {
		if got := b.Batches(); len(got) != 0 {
			t.Errorf("backend stored %d batches from rejected requests", len(got))
		}
	})
}

func TestPublishValidationAcceptsAndNormalises(t *testing.T) {
	t.Parallel()
	observed := time.Now().Add(-time.Minute)
	slightlyAhead := time.Now().Add(time.Minute) // clock skew is tolerated
	batch := []*portbridgev1.Change{
		upsert(t, "Component:Default/PetStore", "component", "DEFAULT", "petstore"),
		upsert(t, "api:prod/x", "API", "prod", "X"),
		{EntityRef: "group:default/team-a", Uid: "u1", Etag: "e1", ObservedAt: timestamppb.New(observed), Change: &portbridgev1.Change_Deleted{}},
		{EntityRef: "user:default/jo", ObservedAt: timestamppb.New(slightlyAhead), Change: &portbridgev1.Change_Deleted{Deleted: &portbridgev1.Deleted{}}},
	}
	now := time.Now()
	if vs := (validator{lim: limits.Default(), now: now}).validateBatch("", batch, ""); len(vs) != 0 {
		t.Fatalf("violations %v", vs)
	}
	wantRefs := []string{"component:default/petstore", "api:prod/x", "group:default/team-a", "user:default/jo"}
	for i, c := range batch {
		if c.EntityRef != wantRefs[i] {
			t.Errorf("changes[%d].entity_ref = %q, want %q", i, c.EntityRef, wantRefs[i])
		}
	}
	if !batch[0].ObservedAt.AsTime().Equal(now) || !batch[2].ObservedAt.AsTime().Equal(observed) {
		t.Errorf("observed_at not defaulted to now or not kept: %v, %v", batch[0].ObservedAt.AsTime(), batch[2].ObservedAt.AsTime())
	}
	if batch[2].GetDeleted() == nil {
		t.Errorf("a Deleted oneof with a nil message was not normalised")
	}
}

func TestPublishEmptyBatch(t *testing.T) {
	t.Parallel()
	b := &servertest.Backend{}
	url, _ := startServer(t, defaultConfig(), b)
	c := portbridgev1connect.NewBridgeServiceClient(h2cClient(t), url, bearer(testToken))
	_, err := c.PublishChanges(context.Background(), connect.NewRequest(&portbridgev1.PublishChangesRequest{}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "changes: must not be empty") {
		t.Errorf("empty batch gave %v, want InvalidArgument naming changes", err)
	}
}

func TestViolationsAreBounded(t *testing.T) {
	t.Parallel()
	batch := make([]*portbridgev1.Change, 500)
	for i := range batch {
		batch[i] = del("bad")
	}
	vs := (validator{lim: limits.Default(), now: time.Now()}).validateBatch("", batch, "")
	if len(vs) != maxViolations {
		t.Fatalf("%d violations, want %d", len(vs), maxViolations)
	}
	if msg := vs.err().Error(); !strings.Contains(msg, "changes[0].entity_ref") || !strings.Contains(msg, "and 99 more") {
		t.Errorf("message %q", msg)
	}
}
