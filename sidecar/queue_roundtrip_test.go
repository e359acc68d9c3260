package main

// What the door accepts, every later stage can decode: the largest input
// validation accepts, and anything a fuzzer finds that it accepts, goes
// through the real server and the state file's queue and decodes back
// equal.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/server"
	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/limits"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/state"
)

// door is the real API server in front of an engine and its state file
// (the engine is not run: what is published stays queued).
type door struct {
	url   string
	store *state.Store
	seq   uint64 // changes stored so far (queue sequence numbers start at 1)
}

func newDoor(t testing.TB, lim limits.Limits) *door {
	t.Helper()
	_, catURL, portEmu, portURL := emulators(t, 11, 0)
	store, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	cc, err := catalog.New(catalog.Config{BaseURL: catURL, Token: "catalog-token-123"})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := port.New(port.Config{BaseURL: portURL, ClientID: portEmu.ClientID(), ClientSecret: portEmu.ClientSecret()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := mapping.New(mapping.DefaultConfig(), mapping.Options{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Options{Store: store, Catalog: cc, Port: pc, Mapper: m, DeletionThreshold: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Token: "door-token-123", Limits: lim}, backend{eng: eng})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &door{url: hs.URL, store: store}
}

// publish posts a Connect-JSON PublishChanges body; it returns the HTTP
// status and body.
func (d *door) publish(t testing.TB, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, d.url+"/portbridge.v1.BridgeService/PublishChanges", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer door-token-123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// queued returns the entities of the queue, newest last.
func (d *door) queued(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	err := d.store.QueueScan(func(qc state.QueuedChange) error {
		var m map[string]any
		if !qc.Deleted {
			if err := json.Unmarshal(qc.Entity, &m); err != nil {
				return fmt.Errorf("queue item %d does not decode: %w", qc.Seq, err)
			}
		}
		out = append(out, m)
		return nil
	}, func(seq uint64, err error) { t.Fatalf("queue item %d quarantined: %v", seq, err) })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// nested builds a spec whose innermost value is at entity level depth.
func nested(depth int) any {
	var v any = "x"
	for i := 2; i < depth; i++ {
		if i%2 == 0 {
			v = map[string]any{"k": v}
		} else {
			v = []any{v}
		}
	}
	return v
}

func TestLargestAcceptedInputRoundTripsThroughTheQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes a 4 MiB entity")
	}
	t.Parallel()
	lim := limits.Default()
	d := newDoor(t, lim)
	big := strings.Repeat("b", lim.MaxStringBytes-1)
	var fill []any
	for len(fill)*lim.MaxStringBytes < lim.MaxEntityBytes-2*lim.MaxStringBytes {
		fill = append(fill, big)
	}
	ent := map[string]any{"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
		"metadata": map[string]any{"name": "largest", "description": strings.Repeat("d", lim.MaxMetadataFieldBytes-2)},
		"spec":     map[string]any{"deep": nested(lim.MaxDepth), "fill": fill, "n": 12345.5}}
	body, _ := json.Marshal(map[string]any{"changes": []any{map[string]any{"entityRef": "component:default/largest", "upserted": map[string]any{"entity": ent}}}})
	if code, resp := d.publish(t, body); code != 200 {
		t.Fatalf("the largest accepted input was refused: %d %.300s", code, resp)
	}
	got := d.queued(t)
	want := roundTripJSON(t, ent)
	if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Fatal("the largest accepted entity did not decode back equal from the queue")
	}
	// One level deeper is refused at the door, and nothing is stored.
	ent["spec"].(map[string]any)["deep"] = nested(lim.MaxDepth + 1)
	body, _ = json.Marshal(map[string]any{"changes": []any{map[string]any{"entityRef": "component:default/largest", "upserted": map[string]any{"entity": ent}}}})
	if code, resp := d.publish(t, body); code != 400 || !strings.Contains(resp, "limits.maxDepth") {
		t.Fatalf("one level over the depth limit: %d %.300s", code, resp)
	}
	if n := len(d.queued(t)); n != 1 {
		t.Fatalf("%d queued after a refused batch", n)
	}
}

func roundTripJSON(t testing.TB, v any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// FuzzQueueRoundTrip: every entity the real server accepts is stored in the
// queue and decodes back equal to what validation accepted; anything else is
// refused as the caller's error, never a server error.
func FuzzQueueRoundTrip(f *testing.F) {
	for _, s := range []string{
		`{"kind":"Component","metadata":{"name":"a"},"spec":{"type":"service","n":[1,2.5,-3e10,true,null]}}`,
		`{"kind":"component","metadata":{"name":"a","namespace":"DEFAULT","annotations":{"a/b":"ü\u0000"}}}`,
		`{"kind":"Component","metadata":{"name":"a"},"spec":{"a":{"b":{"c":[[[[{"d":"e"}]]]]}}}}`,
		`{"kind":"Component","metadata":{"name":"a"},"spec":{"x":1e308,"y":-0,"z":"\ud800"}}`,
		`{"kind":"Component","metadata":{"name":"a","uid":"u","etag":"e"},"relations":[{"type":"ownedBy","targetRef":"group:default/a"}]}`,
	} {
		f.Add([]byte(s))
	}
	lim := limits.Default()
	lim.MaxDepth, lim.MaxStringBytes, lim.MaxEntityBytes, lim.MaxMetadataFieldBytes = 16, 256, 4096, 1024
	d := newDoor(f, lim)
	f.Fuzz(func(t *testing.T, entity []byte) {
		var req portbridgev1.PublishChangesRequest
		body := []byte(`{"changes":[{"entityRef":"component:default/a","upserted":{"entity":` + string(entity) + `}}]}`)
		if protojson.Unmarshal(body, &req) != nil {
			return // not a request at all
		}
		before := d.store.QueueDepth()
		code, resp := d.publish(t, body)
		switch {
		case code == 400 || code == 413:
			if d.store.QueueDepth() != before {
				t.Fatalf("a refused change was stored")
			}
			return
		case code != 200:
			t.Fatalf("status %d for %s: %.300s", code, entity, resp)
		}
		d.seq++
		qc, ok, err := d.store.QueueGet(d.seq)
		if err != nil || !ok {
			t.Fatalf("the accepted change is not in the queue: %v", err)
		}
		var got map[string]any
		if err := json.Unmarshal(qc.Entity, &got); err != nil {
			t.Fatalf("the stored entity does not decode: %v", err)
		}
		want := req.GetChanges()[0].GetUpserted().GetEntity().AsMap()
		if !reflect.DeepEqual(got, roundTripJSON(t, want)) {
			t.Fatalf("accepted entity %s decoded back as %v", entity, got)
		}
	})
}
