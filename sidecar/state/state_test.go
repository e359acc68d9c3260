package state

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func upsert(ref, name string, at time.Time) *portbridgev1.Change {
	ent, _ := structpb.NewStruct(map[string]any{"kind": "Component", "metadata": map[string]any{"name": name}})
	return &portbridgev1.Change{EntityRef: ref, Uid: "uid-" + name, ObservedAt: timestamppb.New(at),
		Change: &portbridgev1.Change_Upserted{Upserted: &portbridgev1.Upserted{Entity: ent}}}
}

func TestQueueRoundTrip(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	ctx := context.Background()
	now := time.Now().UTC()
	batch := []*portbridgev1.Change{
		upsert("component:default/a", "a", now),
		{EntityRef: "component:default/b", ObservedAt: timestamppb.New(now), Change: &portbridgev1.Change_Deleted{Deleted: &portbridgev1.Deleted{}}},
	}
	refs, depth, err := s.Enqueue(ctx, batch, true, "test")
	if err != nil {
		t.Fatal(err)
	}
	if depth != 2 || len(refs) != 2 || refs[0].Seq >= refs[1].Seq || !refs[1].Deleted || refs[0].Ref != "component:default/a" {
		t.Fatalf("depth %d refs %+v", depth, refs)
	}
	got, ok, err := s.QueueGet(refs[0].Seq)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if !proto.Equal(got.Change, batch[0]) || !got.FullSnapshot || got.Source != "test" {
		t.Fatalf("got %+v", got)
	}
	if oldest, ok := s.QueueOldest(); !ok || time.Since(oldest) > time.Minute {
		t.Fatalf("oldest %v %v", oldest, ok)
	}
	var scanned int
	if err := s.QueueScan(func(QueuedChange) error { scanned++; return nil }); err != nil || scanned != 2 {
		t.Fatalf("scan %d %v", scanned, err)
	}
	if err := s.QueueAck(refs[0].Seq, refs[0].Seq, 9999); err != nil {
		t.Fatal(err)
	}
	if d := s.QueueDepth(); d != 1 {
		t.Fatalf("depth after ack %d", d)
	}
	if _, ok, _ := s.QueueGet(refs[0].Seq); ok {
		t.Fatal("acknowledged item still there")
	}
	// Empty batches store nothing.
	if _, depth, err := s.Enqueue(ctx, nil, false, ""); err != nil || depth != 1 {
		t.Fatalf("empty enqueue: %d %v", depth, err)
	}
}

func TestQueueSurvivesReopen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, _, err := s.Enqueue(context.Background(), []*portbridgev1.Change{upsert("component:default/x", "x", time.Unix(int64(i), 0))}, false, ""); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if d := s.QueueDepth(); d != 10 {
		t.Fatalf("depth after reopen %d", d)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	// A second opener gets a clear lock error naming the file.
	_, err = Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Errorf("second open: %v", err)
	}
	_ = s.Close()

	// A file from a newer schema is refused.
	newer := filepath.Join(dir, "newer.db")
	db, _ := bolt.Open(newer, 0o600, nil)
	_ = db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucketIfNotExists(bucketMeta)
		return b.Put(keySchema, binary.BigEndian.AppendUint64(nil, SchemaVersion+1))
	})
	_ = db.Close()
	if _, err := Open(newer, Options{}); err == nil || !strings.Contains(err.Error(), "newer portbridge") {
		t.Errorf("newer schema: %v", err)
	}

	// Not a bbolt file.
	junk := filepath.Join(dir, "junk.db")
	_ = os.WriteFile(junk, []byte(strings.Repeat("x", 8192)), 0o600)
	if _, err := Open(junk, Options{}); err == nil || !strings.Contains(err.Error(), junk) {
		t.Errorf("junk file: %v", err)
	}
	if _, err := Open("", Options{}); err == nil {
		t.Error("empty path accepted")
	}
	// An existing file with a loose mode is tightened.
	loose := filepath.Join(dir, "loose.db")
	s2, _ := Open(loose, Options{})
	_ = s2.Close()
	_ = os.Chmod(loose, 0o644)
	s2, err = Open(loose, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s2.Close()
	if st, _ := os.Stat(loose); st.Mode().Perm() != 0o600 {
		t.Errorf("loose mode kept: %v", st.Mode().Perm())
	}
}

func TestRecords(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	now := time.UnixMilli(1_700_000_000_123)
	ref := "component:default/a"
	k1 := Key{Blueprint: "component", Identifier: ref}
	k2 := Key{Blueprint: "api", Identifier: "api:ns/with/slash+plus=eq"}
	err := s.Commit(Write{PutRefs: map[string]RefRecord{ref: {ObservedAt: now, Outputs: []Output{{Key: k1, Hash: 42, PushedAt: now}, {Key: k2, Hash: 7, PushedAt: now}}}}})
	if err != nil {
		t.Fatal(err)
	}
	recs, found, err := s.Refs([]string{ref, "x:y/z"})
	if err != nil || !found[0] || found[1] || len(recs[0].Outputs) != 2 || !recs[0].ObservedAt.Equal(now) {
		t.Fatalf("refs %+v %v %v", recs, found, err)
	}
	if o, ok := recs[0].Output(k1); !ok || o.Hash != 42 || !o.PushedAt.Equal(now) {
		t.Fatalf("output k1 %+v %v", o, ok)
	}
	if o, ok := recs[0].Output(k2); !ok || o.Hash != 7 {
		t.Fatalf("output k2 %+v %v", o, ok)
	}
	// Confirm replaces one output and adds another; the observation time stays.
	k3 := Key{Blueprint: "api", Identifier: "api:default/b"}
	if err := s.Commit(Write{Confirm: map[string][]Output{ref: {{Key: k1, Hash: 43}, {Key: k3, Hash: 9}}, "new:default/n": {{Key: Key{"new", "new:default/n"}, Hash: 1}}}}); err != nil {
		t.Fatal(err)
	}
	recs, _, _ = s.Refs([]string{ref, "new:default/n"})
	if o, _ := recs[0].Output(k1); o.Hash != 43 || len(recs[0].Outputs) != 3 || !recs[0].ObservedAt.Equal(now) || len(recs[1].Outputs) != 1 {
		t.Fatalf("after confirm %+v", recs)
	}
	counts, _ := s.OwnedCounts()
	if counts["component"] != 1 || counts["api"] != 2 || counts["new"] != 1 {
		t.Fatalf("counts %v", counts)
	}
	var seen []string
	_ = s.ForEachEntity(func(k Key, r EntityRecord) error { seen = append(seen, k.Identifier+"<-"+r.Ref); return nil })
	if len(seen) != 4 {
		t.Fatalf("foreach %v", seen)
	}
	// Remove drops outputs; DeleteRefs drops records; unknown refs are no-ops.
	if err := s.Commit(Write{Remove: map[string][]Key{ref: {k1, k3}, "gone:default/x": {k1}}, DeleteRefs: []string{"new:default/n"}}); err != nil {
		t.Fatal(err)
	}
	if n, r, _ := s.Counts(); n != 1 || r != 1 {
		t.Fatalf("counts after remove %d %d", n, r)
	}
	if err := s.PutMeta("schema", nil); err == nil {
		t.Error("reserved meta key written")
	}
	if err := s.PutMeta("fingerprint", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.GetMeta("fingerprint"); string(v) != "abc" {
		t.Fatalf("meta %q", v)
	}
}

func TestRecordSize(t *testing.T) {
	t.Parallel()
	// The common record: one output, blueprint = kind, identifier = ref.
	ref := "component:default/artist-lookup"
	rec := RefRecord{ObservedAt: time.Now(), Outputs: []Output{{Key: Key{"component", ref}, Hash: 1 << 60, PushedAt: time.Now()}}}
	if n := len(rec.encode(ref)); n > 24 {
		t.Fatalf("common record encodes to %d bytes", n)
	}
	got, err := decodeRef(ref, rec.encode(ref))
	if err != nil || got.Outputs[0].Key != rec.Outputs[0].Key || got.Outputs[0].Hash != rec.Outputs[0].Hash {
		t.Fatalf("round trip %+v %v", got, err)
	}
}

func TestCorruptRecords(t *testing.T) {
	t.Parallel()
	for _, v := range [][]byte{nil, {0x80}, {2, 0x05, 'a'}, {2, 0xff, 0xff, 0x03}, {2, 1, 0, 0, 1, 2}} {
		if _, err := decodeRef("x:y/z", v); err == nil {
			t.Errorf("decodeRef(%v) accepted", v)
		}
	}
	if _, err := decodeQueued(1, []byte{0x80}); err == nil {
		t.Error("decodeQueued accepted junk")
	}
}

func BenchmarkEnqueue(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batch := make([]*portbridgev1.Change, 20)
	for i := range batch {
		batch[i] = upsert("component:default/a", "a", time.Now())
	}
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := s.Enqueue(context.Background(), batch, false, ""); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/batch20")
}
