package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/proto/portbridge/v1/portbridgev1connect"
	"github.com/portbridge/portbridge/server/servertest"
	"github.com/portbridge/portbridge/sidecar/limits"
)

// deepJSON returns a Connect-JSON PublishChangesRequest whose entity's spec
// nests objects (and arrays) so that the innermost is at level depth (the
// entity object is level 1).
func deepJSON(depth int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"changes":[{"entityRef":"component:default/deep","upserted":{"entity":{"kind":"Component","metadata":{"name":"deep"},"spec":`)
	for i := 2; i <= depth; i++ {
		if i%2 == 0 {
			b.WriteString(`{"x":`)
		} else {
			b.WriteString(`[`)
		}
	}
	b.WriteString(`1`)
	for i := depth; i >= 2; i-- {
		if i%2 == 0 {
			b.WriteString(`}`)
		} else {
			b.WriteString(`]`)
		}
	}
	b.WriteString(`}}}]}`)
	return b.Bytes()
}

// postJSON sends a Connect-JSON request over HTTP/1.1, like curl.
func postJSON(t *testing.T, url, procedure string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+procedure, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http1Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// Issue 13 item 1: an entity nested 4,000 levels deep was accepted at the
// door and then could not be decoded from the queue. The server now rejects
// it naming the depth limit, and stores nothing.
func TestDeepEntityRejectedAtTheDoor(t *testing.T) {
	t.Parallel()
	b := &servertest.Backend{}
	url, _ := startServer(t, defaultConfig(), b)
	code, body := postJSON(t, url, portbridgev1connect.BridgeServicePublishChangesProcedure, deepJSON(4000))
	if code != http.StatusBadRequest || !strings.Contains(body, "invalid_argument") || !strings.Contains(body, "limits.maxDepth") ||
		!strings.Contains(body, "changes[0].upserted.entity.spec") {
		t.Fatalf("HTTP %d: %.400s", code, body)
	}
	if len(body) > 2000 {
		t.Errorf("the error is %d bytes", len(body))
	}
	code, body = postJSON(t, url, portbridgev1connect.BridgeServicePublishChangesProcedure, deepJSON(limits.Default().MaxDepth))
	if code != http.StatusOK {
		t.Fatalf("an entity at the depth limit: HTTP %d: %.400s", code, body)
	}
	if n := len(b.Batches()); n != 1 {
		t.Fatalf("stored %d batches, want the one within the limit", n)
	}
}

func TestRequestLimits(t *testing.T) {
	t.Parallel()
	lim := limits.Limits{MaxChangesPerBatch: 3, MaxSourceBytes: 10, MaxReasonBytes: 8, MaxRefBytes: 40, MaxMappingYAMLBytes: 100,
		MaxStringBytes: 1000, MaxEntityBytes: 5000, MaxMetadataFieldBytes: 500}
	cfg := defaultConfig()
	cfg.Limits = lim
	b := &servertest.Backend{}
	url, _ := startServer(t, cfg, b)
	c := portbridgev1connect.NewBridgeServiceClient(h2cClient(t), url, bearer(testToken), connect.WithGRPC())
	ctx := context.Background()
	withEntity := func(e map[string]any) *portbridgev1.Change { return rawUpsert(t, "component:default/a", e) }
	meta := func(extra map[string]any) map[string]any {
		m := map[string]any{"name": "a"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	long := strings.Repeat("z", 1<<20)
	tests := []struct {
		name  string
		call  func() error
		field string
		want  string
	}{
		{"too many changes", func() error {
			_, err := c.PublishChanges(ctx, connect.NewRequest(&portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{del("a:b/c"), del("a:b/d"), del("a:b/e"), del("a:b/f")}}))
			return err
		}, "changes", "4 changes, over the limit of 3 per batch (limits.maxChangesPerBatch)"},
		{"long source", func() error {
			_, err := c.PublishChanges(ctx, connect.NewRequest(&portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{del("a:b/c")}, Source: long}))
			return err
		}, "source", "longer than the 10-byte limit (limits.maxSourceBytes)"},
		{"long uid", func() error {
			ch := del("a:b/c")
			ch.Uid = long
			_, err := c.PublishChanges(ctx, connect.NewRequest(&portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{ch}}))
			return err
		}, "changes[0].uid", "limits.maxRefBytes"},
		{"long etag in metadata", func() error {
			_, err := c.PublishChanges(ctx, connect.NewRequest(&portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{
				withEntity(map[string]any{"kind": "Component", "metadata": meta(map[string]any{"etag": strings.Repeat("e", 41)})})}}))
			return err
		}, "changes[0].upserted.entity.metadata.etag", "limits.maxRefBytes"},
		{"long string", func() error {
			_, err := c.PublishChanges(ctx, connect.NewRequest(&portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{
				withEntity(map[string]any{"kind": "Component", "metadata": meta(nil), "spec": map[string]any{"type": long}})}}))
			return err
		}, "changes[0].upserted.entity.spec.type", "limits.maxStringBytes"},
		{"long metadata field", func() error {
			_, err := c.PublishChanges(ctx, connect.NewRequest(&portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{
				withEntity(map[string]any{"kind": "Component", "metadata": meta(map[string]any{"description": strings.Repeat("d", 600)})})}}))
			return err
		}, "changes[0].upserted.entity.metadata.description", "limits.maxMetadataFieldBytes"},
		{"large entity", func() error {
			spec := map[string]any{}
			for i := range 6 {
				spec[fmt.Sprint(i)] = strings.Repeat("s", 900)
			}
			_, err := c.PublishChanges(ctx, connect.NewRequest(&portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{
				withEntity(map[string]any{"kind": "Component", "metadata": meta(nil), "spec": spec})}}))
			return err
		}, "changes[0].upserted.entity", "limits.maxEntityBytes"},
		{"long reason", func() error {
			_, err := c.TriggerResync(ctx, connect.NewRequest(&portbridgev1.TriggerResyncRequest{Reason: long}))
			return err
		}, "reason", "limits.maxReasonBytes"},
		{"large mapping_yaml", func() error {
			_, err := c.PreviewMapping(ctx, connect.NewRequest(&portbridgev1.PreviewMappingRequest{Entity: entity(t, "Component", "", "a"), MappingYaml: long}))
			return err
		}, "mapping_yaml", "longer than the 100-byte limit (limits.maxMappingYamlBytes)"},
		{"preview entity too large", func() error {
			e, _ := structpb.NewStruct(map[string]any{"kind": "Component", "metadata": meta(nil), "spec": map[string]any{"x": long}})
			_, err := c.PreviewMapping(ctx, connect.NewRequest(&portbridgev1.PreviewMappingRequest{Entity: e}))
			return err
		}, "entity.spec.x", "limits.maxStringBytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.call()
			var cerr *connect.Error
			if !errors.As(err, &cerr) || cerr.Code() != connect.CodeInvalidArgument {
				t.Fatalf("error = %v, want InvalidArgument", err)
			}
			if !strings.HasPrefix(cerr.Message(), tt.field+": ") || !strings.Contains(cerr.Message(), tt.want) {
				t.Errorf("message = %q, want %q: …%q", cerr.Message(), tt.field, tt.want)
			}
			if len(cerr.Message()) > 300 {
				t.Errorf("message is %d bytes: a whole value was quoted", len(cerr.Message()))
			}
		})
	}
	t.Cleanup(func() {
		if n := len(b.Batches()); n != 0 {
			t.Errorf("stored %d batches from rejected requests", n)
		}
	})
}

// A mapping_yaml the backend cannot compile is the caller's mistake.
func TestPreviewMappingInvalidMapping(t *testing.T) {
	t.Parallel()
	b := &servertest.Backend{PreviewErr: fmt.Errorf("%w: mapping_yaml: request mapping:3:7: jq syntax error", ErrInvalidArgument)}
	url, _ := startServer(t, defaultConfig(), b)
	c := portbridgev1connect.NewBridgeServiceClient(h2cClient(t), url, bearer(testToken))
	_, err := c.PreviewMapping(context.Background(), connect.NewRequest(&portbridgev1.PreviewMappingRequest{Entity: entity(t, "Component", "", "a"), MappingYaml: "resources: ["}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "jq syntax error") {
		t.Fatalf("error = %v, want InvalidArgument with the reason", err)
	}
}

// largestEntity builds the biggest entity the limits accept: nested to
// exactly MaxDepth, and filled with strings of MaxStringBytes up to just
// under MaxEntityBytes.
func largestEntity(t testing.TB, l limits.Limits) *structpb.Struct {
	t.Helper()
	var deep any = "bottom"
	for i := l.MaxDepth; i >= 3; i-- {
		deep = map[string]any{"n": deep}
	}
	spec := map[string]any{"deep": deep}
	e := map[string]any{"apiVersion": "backstage.io/v1alpha1", "kind": "Component", "metadata": map[string]any{"name": "big"}, "spec": spec}
	size := func() int {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	for i := 0; ; i++ {
		room := l.MaxEntityBytes - size() - 20 - len(fmt.Sprint(i))
		if room <= 0 {
			break
		}
		spec[fmt.Sprintf("s%d", i)] = strings.Repeat("x", min(room, l.MaxStringBytes))
	}
	st, err := structpb.NewStruct(e)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// roundTrip is what the queue does with an accepted change today: encode it
// as binary protobuf and decode it again. The lead retargets this when the
// queue changes.
func roundTrip(t testing.TB, c *portbridgev1.Change) {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		t.Fatalf("encode accepted change %s: %v", c.GetEntityRef(), err)
	}
	var back portbridgev1.Change
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatalf("decode accepted change %s (%d bytes): %v", c.GetEntityRef(), len(b), err)
	}
	if !proto.Equal(c, &back) {
		t.Fatalf("accepted change %s decodes to something else", c.GetEntityRef())
	}
	if _, err := json.Marshal(back.GetUpserted().GetEntity().AsMap()); err != nil {
		t.Fatalf("decoded entity %s is not JSON: %v", c.GetEntityRef(), err)
	}
}

// The largest input validation accepts, with the default limits and with the
// highest depth a config may set, survives the queue's encode and decode,
// and one level or byte more is rejected.
func TestLargestAcceptedInputRoundTrips(t *testing.T) {
	t.Parallel()
	ceiling := limits.Default()
	ceiling.MaxDepth = limits.MaxDepthCeiling
	for name, l := range map[string]limits.Limits{"defaults": limits.Default(), "depth ceiling": ceiling} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			v := validator{lim: l, now: time.Now()}
			st := largestEntity(t, l)
			ch := &portbridgev1.Change{EntityRef: "component:default/big", Uid: strings.Repeat("u", l.MaxRefBytes), Etag: strings.Repeat("e", l.MaxRefBytes),
				Change: &portbridgev1.Change_Upserted{Upserted: &portbridgev1.Upserted{Entity: st}}}
			if vs := v.validateBatch("", []*portbridgev1.Change{ch}, strings.Repeat("s", l.MaxSourceBytes)); len(vs) != 0 {
				t.Fatalf("the largest entity was rejected: %v", vs.err())
			}
			roundTrip(t, ch)
			// Through the real server too, in both encodings.
			b := &servertest.Backend{}
			cfg := defaultConfig()
			cfg.Limits = l
			url, _ := startServer(t, cfg, b)
			for _, opt := range []connect.ClientOption{connect.WithGRPC(), connect.WithProtoJSON()} {
				c := portbridgev1connect.NewBridgeServiceClient(h2cClient(t), url, bearer(testToken), opt)
				if _, err := c.PublishChanges(context.Background(), connect.NewRequest(&portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{ch}})); err != nil {
					t.Fatal(err)
				}
			}
			for _, batch := range b.Batches() {
				roundTrip(t, batch[0])
			}
			// One level deeper is refused.
			deeper := proto.Clone(st).(*structpb.Struct)
			deeper.Fields["spec"].GetStructValue().Fields["deep"] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"n": deeper.Fields["spec"].GetStructValue().Fields["deep"]}})
			ch2 := &portbridgev1.Change{EntityRef: "component:default/big", Change: &portbridgev1.Change_Upserted{Upserted: &portbridgev1.Upserted{Entity: deeper}}}
			if vs := v.validateBatch("", []*portbridgev1.Change{ch2}, ""); len(vs) == 0 || !strings.Contains(vs[0].desc, limits.KeyMaxDepth) {
				t.Fatalf("one level deeper: %v", vs)
			}
		})
	}
}

// FuzzValidate: whatever validation accepts decodes back from the queue
// encoding equal to what was accepted. Inputs are Connect-JSON requests (the
// JSON door) or, when they are not JSON, binary protobuf (the gRPC door).
func FuzzValidate(f *testing.F) {
	seeds := []string{
		`{"changes":[{"entityRef":"component:default/a","upserted":{"entity":{"kind":"Component","metadata":{"name":"a","uid":"u1"},"spec":{"type":"service","n":[1,2.5,-3e10,true,null]}}}}]}`,
		`{"changes":[{"entityRef":"component:default/a","uid":"x","etag":"y","observedAt":"2026-01-01T00:00:00Z","deleted":{}}],"fullSnapshot":true,"source":"backstage"}`,
		`{"changes":[{"entityRef":"Component:Default/A","upserted":{"entity":{"kind":"component","metadata":{"name":"a","namespace":"DEFAULT","annotations":{"a/b":"ü\u0000"}}}}}]}`,
		`{"changes":[{"entityRef":"component:default/a","upserted":{"entity":{"kind":"API","metadata":{"name":"a"}}}}]}`,
		`{"changes":[{"entityRef":"broken","deleted":{}}]}`,
		`{"changes":[]}`,
		`{"changes":[{"entityRef":"component:default/a","upserted":{"entity":{"kind":"Component","metadata":{"name":"a"},"spec":{"a":{"b":{"c":[[[[{"d":"e"}]]]]}}}}}}]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
		var m portbridgev1.PublishChangesRequest
		if protojson.Unmarshal([]byte(s), &m) == nil {
			if b, err := proto.Marshal(&m); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add(deepJSON(70))
	lim := limits.Default()
	lim.MaxDepth = 16
	lim.MaxStringBytes = 256
	lim.MaxEntityBytes = 4096
	lim.MaxMetadataFieldBytes = 1024
	f.Fuzz(func(t *testing.T, data []byte) {
		var req portbridgev1.PublishChangesRequest
		if err := protojson.Unmarshal(data, &req); err != nil {
			req.Reset()
			if err := proto.Unmarshal(data, &req); err != nil {
				return
			}
		}
		vs := validator{lim: lim, now: time.Now()}.validateBatch("", req.Changes, req.Source)
		if len(vs) > 0 {
			if len(vs.err().Error()) > 64<<10 {
				t.Fatalf("error of %d bytes", len(vs.err().Error()))
			}
			return
		}
		for _, c := range req.Changes {
			if c.GetUpserted() != nil && lim.CheckStruct(c.GetUpserted().GetEntity()) != nil {
				t.Fatalf("accepted an entity over the limits")
			}
			roundTrip(t, c)
		}
	})
}
