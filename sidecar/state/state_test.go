package state

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
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

func upsert(ref, name string, at time.Time) Change {
	ent, _ := json.Marshal(map[string]any{"kind": "Component", "metadata": map[string]any{"name": name}})
	return Change{Ref: ref, UID: "uid-" + name, Etag: "e1", ObservedAt: at, Entity: ent}
}

func TestQueueRoundTrip(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	ctx := context.Background()
	now := time.Now().UTC()
	batch := []Change{upsert("component:default/a", "a", now), {Ref: "component:default/b", ObservedAt: now, Deleted: true}}
	refs, depth, err := s.Enqueue(ctx, batch, true)
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
	if got.Ref != batch[0].Ref || got.UID != "uid-a" || got.Etag != "e1" || !got.ObservedAt.Equal(now) || string(got.Entity) != string(batch[0].Entity) || got.Deleted {
		t.Fatalf("got %+v", got)
	}
	if at, ok, err := s.SnapshotPending(); !ok || err != nil || time.Since(at) > time.Minute {
		t.Fatalf("snapshot flag %v %v %v", at, ok, err)
	}
	if oldest, ok := s.QueueOldest(); !ok || time.Since(oldest) > time.Minute {
		t.Fatalf("oldest %v %v", oldest, ok)
	}
	var scanned int
	if err := s.QueueScan(func(QueuedChange) error { scanned++; return nil }, nil); err != nil || scanned != 2 {
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
	if _, depth, err := s.Enqueue(ctx, nil, false); err != nil || depth != 1 {
		t.Fatalf("empty enqueue: %d %v", depth, err)
	}
	if _, _, err := s.Enqueue(ctx, []Change{{Ref: "component:default/x", Entity: []byte("{not json")}}, false); err == nil {
		t.Fatal("invalid entity JSON stored")
	}
	// A snapshot reconciled by a resync that started after it clears the flag;
	// an older resync does not.
	if err := s.SnapshotDone(time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.SnapshotPending(); !ok {
		t.Fatal("an older resync cleared the snapshot flag")
	}
	if err := s.SnapshotDone(time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.SnapshotPending(); ok {
		t.Fatal("snapshot flag kept")
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
		if _, _, err := s.Enqueue(context.Background(), []Change{upsert("component:default/x", "x", time.Unix(int64(i), 0))}, i == 3); err != nil {
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
	if _, ok, _ := s.SnapshotPending(); !ok {
		t.Fatal("the snapshot request did not survive the restart")
	}
}

func TestQuarantine(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	refs, _, err := s.Enqueue(context.Background(), []Change{upsert("component:default/a", "a", time.Now()), upsert("component:default/b", "b", time.Now())}, false)
	if err != nil {
		t.Fatal(err)
	}
	// Damage the first item underneath.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQueue).Put(binary.BigEndian.AppendUint64(nil, refs[0].Seq), []byte{0x80})
	}); err != nil {
		t.Fatal(err)
	}
	var good []string
	var bad []uint64
	if err := s.QueueScan(func(qc QueuedChange) error { good = append(good, qc.Ref); return nil }, func(seq uint64, _ error) { bad = append(bad, seq) }); err != nil {
		t.Fatal(err)
	}
	if len(good) != 1 || len(bad) != 1 || bad[0] != refs[0].Seq {
		t.Fatalf("good %v bad %v", good, bad)
	}
	if n, _ := s.QuarantineCount(); n != 1 || s.QueueDepth() != 1 {
		t.Fatalf("quarantined %d depth %d", n, s.QueueDepth())
	}
	list, err := s.QuarantineList(10)
	if err != nil || len(list) != 1 || !strings.Contains(list[0].Reason, "corrupt") || list[0].Size != 1 {
		t.Fatalf("list %+v %v", list, err)
	}
	// QueueGet quarantines too; Quarantine moves an item that cannot be mapped.
	if err := s.Quarantine(refs[1].Seq, "mapping panicked"); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.QuarantineCount(); n != 2 || s.QueueDepth() != 0 {
		t.Fatalf("quarantined %d depth %d", n, s.QueueDepth())
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
	_, err = Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Errorf("second open: %v", err)
	}
	_ = s.Close()

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

	junk := filepath.Join(dir, "junk.db")
	_ = os.WriteFile(junk, []byte(strings.Repeat("x", 8192)), 0o600)
	if _, err := Open(junk, Options{}); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), junk) {
		t.Errorf("junk file: %v", err)
	}
	if _, err := Open("", Options{}); err == nil {
		t.Error("empty path accepted")
	}
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

// A truncated file (a copy cut short, a full disk) is refused with an error
// naming it, at every length: never a SIGBUS or a bbolt panic.
func TestTruncatedFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		ref := "component:default/c" + strings.Repeat("x", i%40) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if err := s.Commit(Write{Observed: map[string]time.Time{ref: time.Now()}, Confirm: map[string][]Output{ref: {{Key: Key{"component", ref}, Hash: 1}}}}); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close()
	full, _ := os.ReadFile(path)
	var hw int64
	db, _ := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	_ = db.View(func(tx *bolt.Tx) error { hw = tx.Size(); return nil })
	_ = db.Close()
	for _, n := range []int64{1, 100, 4096, 4096 + 100, 8192, 3 * 4096, hw / 2, hw - 4096} {
		if n <= 0 || n >= hw {
			continue
		}
		t.Logf("cut at %d of %d", n, hw)
		cut := filepath.Join(dir, "cut.db")
		if err := os.WriteFile(cut, full[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(cut, Options{})
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), cut) || !strings.Contains(err.Error(), "move it away") {
			t.Errorf("truncated to %d of %d bytes: %v", n, hw, err)
		}
	}
}

func TestCheckFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CheckFile(); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("cp", path, path+".copy").Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".copy", path); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckFile(); !errors.Is(err, ErrFileReplaced) {
		t.Fatalf("replaced: %v", err)
	}
	_ = os.Remove(path)
	if err := s.CheckFile(); !errors.Is(err, ErrFileGone) {
		t.Fatalf("deleted: %v", err)
	}
}

func TestRecords(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	now := time.UnixMilli(1_700_000_000_123)
	ref := "component:default/a"
	k1 := Key{Blueprint: "component", Identifier: ref}
	k2 := Key{Blueprint: "api", Identifier: "api:ns/with/slash+plus=eq"}
	err := s.Commit(Write{Observed: map[string]time.Time{ref: now}, Confirm: map[string][]Output{ref: {{Key: k1, Hash: 42, PushedAt: now}, {Key: k2, Hash: 7, PushedAt: now}}}})
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
	// Forget keeps a record that still owns something.
	if err := s.Commit(Write{Forget: []string{"new:default/n"}}); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := s.Refs([]string{"new:default/n"}); !found[0] {
		t.Fatal("a record that owns something was forgotten")
	}
	if err := s.Commit(Write{Remove: map[string][]Key{ref: {k1, k3}, "gone:default/x": {k1}, "new:default/n": {{"new", "new:default/n"}}}, Forget: []string{"new:default/n"}}); err != nil {
		t.Fatal(err)
	}
	if n, r, _ := s.Counts(); n != 1 || r != 1 {
		t.Fatalf("counts after remove %d %d", n, r)
	}
	counts, _ = s.OwnedCounts()
	if counts["component"] != 0 || counts["api"] != 1 || counts["new"] != 0 || len(counts) != 1 {
		t.Fatalf("counts after remove %v", counts)
	}
	if err := s.PutMeta("schema", nil); err == nil {
		t.Error("reserved meta key written")
	}
	if err := s.PutMeta("~owned/x", []byte{1}); err == nil {
		t.Error("reserved meta prefix written")
	}
	if err := s.PutMeta("fingerprint", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.GetMeta("fingerprint"); string(v) != "abc" {
		t.Fatalf("meta %q", v)
	}
}

// Owners finds every ref that claims a key: the ref named by the
// identifier, and refs that map to it under another name (the claims
// index), and follows them as records change.
func TestOwners(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	a, b, c := "component:default/a", "component:default/b", "api:default/c"
	shared := Key{"component", a}
	w := Write{Confirm: map[string][]Output{}}
	for r, o := range map[string]Output{a: {Key: shared, Hash: 1}, b: {Key: shared, Hash: 0}, c: {Key: Key{"service", "svc"}, Hash: 3}} {
		w.Confirm[r] = []Output{o}
	}
	if err := s.Commit(w); err != nil {
		t.Fatal(err)
	}
	own, err := s.Owners([]Key{shared, {"service", "svc"}, {"component", "nobody"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := own[shared]; len(got) != 2 || got[0].Ref != a || got[0].Hash != 1 || got[1].Ref != b || got[1].Hash != 0 {
		t.Fatalf("owners of shared %+v", got)
	}
	if got := own[Key{"service", "svc"}]; len(got) != 1 || got[0].Ref != c {
		t.Fatalf("owners of svc %+v", got)
	}
	if _, ok := own[Key{"component", "nobody"}]; ok {
		t.Fatal("owners for an unclaimed key")
	}
	if err := s.Commit(Write{Remove: map[string][]Key{b: {shared}}, Forget: []string{b}}); err != nil {
		t.Fatal(err)
	}
	own, _ = s.Owners([]Key{shared})
	if got := own[shared]; len(got) != 1 || got[0].Ref != a {
		t.Fatalf("owners after release %+v", got)
	}
	var claims int
	_ = s.db.View(func(tx *bolt.Tx) error { claims = tx.Bucket(bucketClaims).Stats().KeyN; return nil })
	if claims != 1 { // only svc (c's alias) is left in the index
		t.Fatalf("%d claims index entries", claims)
	}
}

func TestParked(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	p := Parked{At: time.UnixMilli(1_700_000_000_000), Blueprint: "component", Identifier: "x", Status: 422, Message: "bad property"}
	if err := s.Commit(Write{Park: map[string]Parked{"component:default/x": p}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.ParkedCount(); n != 1 {
		t.Fatalf("parked %d", n)
	}
	got, err := s.ParkedRefs(10)
	if err != nil || got["component:default/x"] != p {
		t.Fatalf("parked %+v %v", got, err)
	}
	if ok, _ := s.IsParked("component:default/x"); !ok {
		t.Fatal("not parked")
	}
	if err := s.Commit(Write{Unpark: []string{"component:default/x"}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.ParkedCount(); n != 0 {
		t.Fatalf("parked %d after unpark", n)
	}
}

func TestForEachRefChunks(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	w := Write{Observed: map[string]time.Time{}}
	for i := range refChunk*2 + 7 {
		w.Observed["component:default/"+strings.Repeat("z", i/100)+string(rune('a'+i%26))+string(rune('a'+(i/26)%26))] = time.Now()
	}
	if err := s.Commit(w); err != nil {
		t.Fatal(err)
	}
	n := 0
	var last string
	if err := s.ForEachRef(func(ref string, _ RefRecord) error {
		if ref <= last {
			t.Fatalf("out of order: %s after %s", ref, last)
		}
		last = ref
		n++
		// Writing from the callback is allowed: no transaction is open.
		return s.PutMeta("x", []byte{1})
	}); err != nil {
		t.Fatal(err)
	}
	if n != len(w.Observed) {
		t.Fatalf("visited %d of %d", n, len(w.Observed))
	}
}

// A record's content version rides along as an optional trailer: set by a
// Write, kept by later writes that do not name it, cleared by 0.
func TestRecordVersion(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	ref := "component:default/v"
	if err := s.Commit(Write{Versions: map[string]uint64{ref: 77}, Confirm: map[string][]Output{ref: {{Key: Key{"component", ref}, Hash: 1}}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(Write{Observed: map[string]time.Time{ref: time.UnixMilli(5)}}); err != nil {
		t.Fatal(err)
	}
	recs, _, err := s.Refs([]string{ref})
	if err != nil || recs[0].Version != 77 || len(recs[0].Outputs) != 1 {
		t.Fatalf("record %+v %v", recs[0], err)
	}
	if err := s.Commit(Write{Versions: map[string]uint64{ref: 0}}); err != nil {
		t.Fatal(err)
	}
	if recs, _, _ := s.Refs([]string{ref}); recs[0].Version != 0 {
		t.Fatalf("version not cleared: %+v", recs[0])
	}
	// A record of an entity that maps to nothing still keeps its version.
	if err := s.Commit(Write{Versions: map[string]uint64{"api:default/none": 9}}); err != nil {
		t.Fatal(err)
	}
	if recs, found, _ := s.Refs([]string{"api:default/none"}); !found[0] || recs[0].Version != 9 {
		t.Fatalf("version of an output-less record: %+v %v", recs[0], found[0])
	}
}

func TestRecordSize(t *testing.T) {
	t.Parallel()
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
	for _, v := range [][]byte{nil, {0x80}, {2, 0x05, 'a'}, {2, 0xff, 0xff, 0x03}, {2, 1, 0, 0, 1, 2}, {2, 0, 1, 2, 3}} {
		if _, err := decodeRef("x:y/z", v); err == nil {
			t.Errorf("decodeRef(%v) accepted", v)
		}
	}
	for _, v := range [][]byte{{0x80}, {2}, {2, 0, 0}, {2, 0, 1, 'x', 0, 0, 2}, append([]byte{2, 0, 1, 'x', 0, 0, 2}, "{"...)} {
		if _, err := decodeQueued(1, v); err == nil {
			t.Errorf("decodeQueued(%v) accepted", v)
		}
	}
}

// A schema 1 file (protobuf queue items, no index) opens as schema 2 with
// its queue converted, the snapshot request kept, the claims index and
// counts built, and an unconvertible item quarantined, not dropped.
func TestMigrateV1(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := structpb.NewStruct(map[string]any{"kind": "Component", "metadata": map[string]any{"name": "a"}})
	stb, _ := proto.Marshal(st)
	var change []byte
	change = protowire.AppendTag(change, 1, protowire.BytesType)
	change = protowire.AppendString(change, "component:default/a")
	change = protowire.AppendTag(change, 4, protowire.BytesType)
	ts := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1_700_000_000)
	change = protowire.AppendBytes(change, ts)
	up := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), stb)
	change = protowire.AppendTag(change, 5, protowire.BytesType)
	change = protowire.AppendBytes(change, up)
	v1item := func(flags byte, body []byte) []byte {
		b := binary.AppendVarint(nil, time.Now().UnixNano())
		b = append(b, flags)
		b = binary.AppendUvarint(b, 4)
		b = append(b, "test"...)
		return append(b, body...)
	}
	rec := RefRecord{Outputs: []Output{{Key: Key{"service", "alias"}, Hash: 5}}}
	err = db.Update(func(tx *bolt.Tx) error {
		m, _ := tx.CreateBucket(bucketMeta)
		_ = m.Put(keySchema, binary.BigEndian.AppendUint64(nil, 1))
		q, _ := tx.CreateBucket(bucketQueue)
		_ = q.Put(binary.BigEndian.AppendUint64(nil, 1), v1item(1, change))
		_ = q.Put(binary.BigEndian.AppendUint64(nil, 2), v1item(0, []byte{0xff, 0xff}))
		r, _ := tx.CreateBucket(bucketRefs)
		return r.Put([]byte("component:default/a"), rec.encode("component:default/a"))
	})
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []QueuedChange
	if err := s.QueueScan(func(qc QueuedChange) error { got = append(got, qc); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Ref != "component:default/a" || got[0].ObservedAt.Unix() != 1_700_000_000 || !strings.Contains(string(got[0].Entity), `"name":"a"`) {
		t.Fatalf("converted queue %+v", got)
	}
	if n, _ := s.QuarantineCount(); n != 1 {
		t.Fatalf("quarantined %d", n)
	}
	if _, ok, _ := s.SnapshotPending(); !ok {
		t.Fatal("snapshot request lost in migration")
	}
	own, _ := s.Owners([]Key{{"service", "alias"}})
	if len(own[Key{"service", "alias"}]) != 1 {
		t.Fatalf("claims index not built: %+v", own)
	}
	if c, _ := s.OwnedCounts(); c["service"] != 1 {
		t.Fatalf("counts %v", c)
	}
}

func BenchmarkEnqueue(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batch := make([]Change, 20)
	for i := range batch {
		batch[i] = upsert("component:default/a", "a", time.Now())
	}
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := s.Enqueue(context.Background(), batch, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/batch20")
}
