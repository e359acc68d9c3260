package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Key names a Port entity.
type Key struct {
	Blueprint  string
	Identifier string
}

func (k Key) String() string { return k.Blueprint + "/" + k.Identifier }

// Output is a Port entity a Backstage entity produced. Its presence is the
// ownership record: only outputs are ever deleted by the sidecar.
type Output struct {
	Key
	// Hash of the content Port last confirmed for this ref; 0 when the ref
	// claims the entity without having written it (another ref producing the
	// same key wins it).
	Hash uint64
	// PushedAt is when Port confirmed it (millisecond precision).
	PushedAt time.Time
}

// RefRecord is what the sidecar remembers of one Backstage entity: one
// record per entity, keyed by its ref.
type RefRecord struct {
	// ObservedAt is the newest observation applied for this entity
	// (millisecond precision); an older observation never overwrites it.
	ObservedAt time.Time
	// Outputs are the Port entities it produced.
	Outputs []Output
	// Version identifies the catalog entity's content and the mapping that
	// produced Outputs (a hash of its metadata.etag and the mapping's
	// fingerprint); 0 when unknown. While the catalog's etag and the
	// mapping stay the same, a resync need not read or map the entity.
	Version uint64
}

// Keys lists the record's outputs' keys.
func (r RefRecord) Keys() []Key {
	keys := make([]Key, len(r.Outputs))
	for i, o := range r.Outputs {
		keys[i] = o.Key
	}
	return keys
}

// Output returns the output for k.
func (r *RefRecord) Output(k Key) (Output, bool) {
	if r == nil {
		return Output{}, false
	}
	for _, o := range r.Outputs {
		if o.Key == k {
			return o, true
		}
	}
	return Output{}, false
}

// Owner is one ref's ownership of a key.
type Owner struct {
	Ref string
	Output
}

// The encoding is compact because a catalog has one record per entity
// (≤ 150 bytes per entity on disk): times are varint milliseconds, a
// blueprint equal to the ref's kind and an identifier equal to the ref (Port
// identifiers default to the Backstage ref) are stored empty.
func (r RefRecord) encode(ref string) []byte {
	kind := refKind(ref)
	b := binary.AppendVarint(make([]byte, 0, 32), r.ObservedAt.UnixMilli())
	b = binary.AppendUvarint(b, uint64(len(r.Outputs)))
	for _, o := range r.Outputs {
		if o.Blueprint == kind {
			b = appendString(b, "")
		} else {
			b = appendString(b, o.Blueprint)
		}
		if o.Identifier == ref {
			b = appendString(b, "")
		} else {
			b = appendString(b, o.Identifier)
		}
		b = binary.BigEndian.AppendUint64(b, o.Hash)
		b = binary.AppendVarint(b, o.PushedAt.UnixMilli())
	}
	if r.Version != 0 {
		// Optional trailer: records without it read as Version 0.
		b = binary.BigEndian.AppendUint64(b, r.Version)
	}
	return b
}

func decodeRef(ref string, v []byte) (RefRecord, error) {
	ms, n := binary.Varint(v)
	if n <= 0 {
		return RefRecord{}, fmt.Errorf("corrupt ref record")
	}
	r := &reader{b: v[n:]}
	rec := RefRecord{ObservedAt: time.UnixMilli(ms)}
	count := r.uvarint()
	if r.err == nil && count > uint64(len(r.b)) {
		r.err = fmt.Errorf("corrupt output count %d", count)
	}
	kind := refKind(ref)
	for i := uint64(0); i < count && r.err == nil; i++ {
		o := Output{Key: Key{Blueprint: r.string(), Identifier: r.string()}}
		if o.Blueprint == "" {
			o.Blueprint = kind
		}
		if o.Identifier == "" {
			o.Identifier = ref
		}
		o.Hash = r.uint64()
		o.PushedAt = time.UnixMilli(r.varint())
		rec.Outputs = append(rec.Outputs, o)
	}
	switch {
	case r.err != nil:
	case len(r.b) == 8:
		rec.Version = binary.BigEndian.Uint64(r.b)
	case len(r.b) != 0:
		r.err = fmt.Errorf("corrupt record trailer of %d bytes", len(r.b))
	}
	return rec, r.err
}

// aliased reports whether an output of ref is claimed under a key other
// than the ref itself: only such outputs can be produced by two refs, so
// only they are indexed in the claims bucket.
func aliased(ref string, k Key) bool { return k.Identifier != ref }

func claimKey(k Key) []byte {
	b := make([]byte, 0, len(k.Blueprint)+1+len(k.Identifier))
	b = append(b, k.Blueprint...)
	b = append(b, 0)
	return append(b, k.Identifier...)
}

// refKind is the kind part of a canonical ref ("component" for
// "component:default/x").
func refKind(ref string) string {
	if i := strings.IndexByte(ref, ':'); i > 0 {
		return ref[:i]
	}
	return ""
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("corrupt varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("corrupt varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uint64() uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.err = fmt.Errorf("corrupt hash")
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) string() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if uint64(len(r.b)) < n {
		r.err = fmt.Errorf("corrupt string length %d", n)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// Refs returns the records of Backstage refs; found[i] tells whether refs[i]
// has one. It reads all of them in one transaction.
func (s *Store) Refs(refs []string) (recs []RefRecord, found []bool, err error) {
	recs = make([]RefRecord, len(refs))
	found = make([]bool, len(refs))
	err = s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRefs)
		for i, r := range refs {
			v := b.Get([]byte(r))
			if v == nil {
				continue
			}
			rec, err := decodeRef(r, v)
			if err != nil {
				return fmt.Errorf("ref %s: %w", r, err)
			}
			recs[i], found[i] = rec, true
		}
		return nil
	})
	return recs, found, err
}

// Owners returns, per key, every ref whose record claims it: the ref named
// by the identifier itself (the usual case) and the refs in the claims
// index. Keys nobody claims are absent.
func (s *Store) Owners(keys []Key) (map[Key][]Owner, error) {
	out := map[Key][]Owner{}
	err := s.view(func(tx *bolt.Tx) error {
		rb, cb := tx.Bucket(bucketRefs), tx.Bucket(bucketClaims)
		add := func(k Key, ref string) error {
			if slices.ContainsFunc(out[k], func(o Owner) bool { return o.Ref == ref }) {
				return nil
			}
			v := rb.Get([]byte(ref))
			if v == nil {
				return nil
			}
			rec, err := decodeRef(ref, v)
			if err != nil {
				return fmt.Errorf("ref %s: %w", ref, err)
			}
			if o, ok := rec.Output(k); ok {
				out[k] = append(out[k], Owner{Ref: ref, Output: o})
			}
			return nil
		}
		for _, k := range keys {
			if err := add(k, k.Identifier); err != nil {
				return err
			}
			if v := cb.Get(claimKey(k)); v != nil {
				refs, err := decodeRefList(v)
				if err != nil {
					return fmt.Errorf("claims of %s: %w", k, err)
				}
				for _, r := range refs {
					if err := add(k, r); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	return out, err
}

func decodeRefList(v []byte) ([]string, error) {
	r := &reader{b: v}
	var out []string
	for len(r.b) > 0 && r.err == nil {
		out = append(out, r.string())
	}
	return out, r.err
}

func encodeRefList(refs []string) []byte {
	var b []byte
	for _, r := range refs {
		b = appendString(b, r)
	}
	return b
}

// Parked is an entity whose last write Port refused for good (a 4xx other
// than 408 and 429): it is not retried on the change path; the next resync
// or mapping change tries again.
type Parked struct {
	At         time.Time
	Blueprint  string
	Identifier string
	Status     int
	Message    string
}

// Write is a set of record changes committed together. Per ref, Observed
// is applied first, then Confirm, then Remove; Forget drops a record once
// it has no outputs left (a record that still owns something is never
// dropped).
type Write struct {
	// Observed sets refs' observation times (creating records).
	Observed map[string]time.Time
	// Versions sets refs' content versions (see RefRecord.Version); 0
	// clears one.
	Versions map[string]uint64
	// Confirm adds or replaces outputs of refs (creating records).
	Confirm map[string][]Output
	// Remove drops outputs of refs.
	Remove map[string][]Key
	// Forget drops records that own nothing.
	Forget []string
	// Park and Unpark record or clear refs Port refused for good.
	Park   map[string]Parked
	Unpark []string
}

// Empty reports whether w changes nothing.
func (w *Write) Empty() bool {
	return len(w.Observed)+len(w.Versions)+len(w.Confirm)+len(w.Remove)+len(w.Forget)+len(w.Park)+len(w.Unpark) == 0
}

func (w *Write) refs() []string {
	set := map[string]struct{}{}
	for r := range w.Observed {
		set[r] = struct{}{}
	}
	for r := range w.Versions {
		set[r] = struct{}{}
	}
	for r := range w.Confirm {
		set[r] = struct{}{}
	}
	for r := range w.Remove {
		set[r] = struct{}{}
	}
	for _, r := range w.Forget {
		set[r] = struct{}{}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	slices.Sort(out) // bbolt writes sorted keys fastest
	return out
}

// Commit applies w in one short write transaction (shared with concurrent
// commits through bbolt's batching). It keeps the claims index and the
// owned counts in step with the records.
func (s *Store) Commit(w Write) error {
	if w.Empty() {
		return nil
	}
	refs := w.refs()
	forget := map[string]bool{}
	for _, r := range w.Forget {
		forget[r] = true
	}
	err := s.db.Batch(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRefs)
		counts := map[string]int64{}
		for _, r := range refs {
			var rec RefRecord
			old := rb.Get([]byte(r))
			existed := old != nil
			if existed {
				var err error
				if rec, err = decodeRef(r, old); err != nil {
					return fmt.Errorf("ref %s: %w", r, err)
				}
			}
			before := rec.Keys()
			if t, ok := w.Observed[r]; ok {
				rec.ObservedAt = t
			}
			if v, ok := w.Versions[r]; ok {
				rec.Version = v
			}
			for _, o := range w.Confirm[r] {
				if i := slices.IndexFunc(rec.Outputs, func(x Output) bool { return x.Key == o.Key }); i >= 0 {
					rec.Outputs[i] = o
				} else {
					rec.Outputs = append(rec.Outputs, o)
				}
			}
			if keys := w.Remove[r]; len(keys) > 0 {
				rec.Outputs = slices.DeleteFunc(rec.Outputs, func(o Output) bool { return slices.Contains(keys, o.Key) })
			}
			if err := reindexRef(tx, r, before, rec.Keys(), counts); err != nil {
				return err
			}
			switch {
			case forget[r] && len(rec.Outputs) == 0:
				if existed {
					if err := rb.Delete([]byte(r)); err != nil {
						return err
					}
				}
			case !existed && len(rec.Outputs) == 0 && w.Observed[r].IsZero() && rec.Version == 0:
				// Nothing to remember (a removal for an unknown ref).
			default:
				if err := rb.Put([]byte(r), rec.encode(r)); err != nil {
					return fmt.Errorf("ref %s: %w", r, err)
				}
			}
		}
		if err := addCounts(tx, counts); err != nil {
			return err
		}
		pb := tx.Bucket(bucketParked)
		for r, p := range w.Park {
			if err := pb.Put([]byte(r), p.encode()); err != nil {
				return err
			}
		}
		for _, r := range w.Unpark {
			if err := pb.Delete([]byte(r)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit state to %s: %w", s.path, err)
	}
	return nil
}

// reindex updates the claims index and the count deltas for one ref whose
// keys went from before to after.
func reindexRef(tx *bolt.Tx, ref string, before, after []Key, counts map[string]int64) error {
	cb := tx.Bucket(bucketClaims)
	for _, k := range after {
		if slices.Contains(before, k) {
			continue
		}
		counts[k.Blueprint]++
		if aliased(ref, k) {
			if err := editClaims(cb, k, func(refs []string) []string {
				if !slices.Contains(refs, ref) {
					refs = append(refs, ref)
				}
				return refs
			}); err != nil {
				return err
			}
		}
	}
	for _, k := range before {
		if slices.Contains(after, k) {
			continue
		}
		counts[k.Blueprint]--
		if aliased(ref, k) {
			if err := editClaims(cb, k, func(refs []string) []string {
				return slices.DeleteFunc(refs, func(x string) bool { return x == ref })
			}); err != nil {
				return err
			}
		}
	}
	return nil
}

func editClaims(cb *bolt.Bucket, k Key, fn func([]string) []string) error {
	ck := claimKey(k)
	var refs []string
	if v := cb.Get(ck); v != nil {
		var err error
		if refs, err = decodeRefList(v); err != nil {
			return fmt.Errorf("claims of %s: %w", k, err)
		}
	}
	refs = fn(refs)
	if len(refs) == 0 {
		return cb.Delete(ck)
	}
	return cb.Put(ck, encodeRefList(refs))
}

// countPrefix starts the meta keys of owned counts per blueprint.
const countPrefix = "~owned/"

func addCounts(tx *bolt.Tx, counts map[string]int64) error {
	mb := tx.Bucket(bucketMeta)
	for bp, d := range counts {
		if d == 0 {
			continue
		}
		k := []byte(countPrefix + bp)
		var n int64
		if v := mb.Get(k); len(v) == 8 {
			n = int64(binary.BigEndian.Uint64(v))
		}
		n += d
		if n <= 0 {
			if err := mb.Delete(k); err != nil {
				return err
			}
			continue
		}
		if err := mb.Put(k, binary.BigEndian.AppendUint64(nil, uint64(n))); err != nil {
			return err
		}
	}
	return nil
}

// OwnedCounts returns how many Port entities the sidecar owns per blueprint
// (a claim by two refs counts twice). It reads a few counters, not the
// records.
func (s *Store) OwnedCounts() (map[string]uint64, error) {
	out := map[string]uint64{}
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMeta).Cursor()
		prefix := []byte(countPrefix)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(v) == 8 {
				out[string(k[len(prefix):])] = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	})
	return out, err
}

// refChunk is how many records ForEachRef reads per read transaction: short
// transactions keep the file from growing while writers wait for pages
// held by a long reader.
const refChunk = 1000

// ForEachRef calls fn for every known Backstage ref in key order, reading
// refChunk records per transaction; fn runs outside any transaction and may
// call the Store. A record changed between chunks is seen as it is when its
// chunk is read.
func (s *Store) ForEachRef(fn func(string, RefRecord) error) error {
	var after []byte
	for {
		type item struct {
			ref string
			rec RefRecord
		}
		var chunk []item
		err := s.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketRefs).Cursor()
			var k, v []byte
			if after == nil {
				k, v = c.First()
			} else {
				k, v = c.Seek(after)
				if k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && len(chunk) < refChunk; k, v = c.Next() {
				rec, err := decodeRef(string(k), v)
				if err != nil {
					return fmt.Errorf("ref %s: %w", k, err)
				}
				chunk = append(chunk, item{string(k), rec})
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, it := range chunk {
			if err := fn(it.ref, it.rec); err != nil {
				return err
			}
		}
		if len(chunk) < refChunk {
			return nil
		}
		after = []byte(chunk[len(chunk)-1].ref)
	}
}

// Counts returns the number of owned outputs and of ref records.
func (s *Store) Counts() (entities, refs int, err error) {
	err = s.ForEachRef(func(_ string, rec RefRecord) error {
		refs++
		entities += len(rec.Outputs)
		return nil
	})
	return entities, refs, err
}

func (p Parked) encode() []byte {
	b := binary.AppendVarint(nil, p.At.UnixMilli())
	b = appendString(b, p.Blueprint)
	b = appendString(b, p.Identifier)
	b = binary.AppendUvarint(b, uint64(p.Status))
	return appendString(b, p.Message)
}

func decodeParked(v []byte) (Parked, error) {
	r := &reader{b: v}
	p := Parked{At: time.UnixMilli(r.varint()), Blueprint: r.string(), Identifier: r.string()}
	p.Status = int(r.uvarint())
	p.Message = r.string()
	return p, r.err
}

// ParkedCount is the number of parked refs.
func (s *Store) ParkedCount() (int, error) {
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketParked).Stats().KeyN
		return nil
	})
	return n, err
}

// ParkedRefs returns up to limit parked refs with why, newest first.
func (s *Store) ParkedRefs(limit int) (map[string]Parked, error) {
	out := map[string]Parked{}
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketParked).ForEach(func(k, v []byte) error {
			p, err := decodeParked(v)
			if err != nil {
				return fmt.Errorf("parked %s: %w", k, err)
			}
			out[string(k)] = p
			return nil
		})
	})
	if len(out) > limit && limit > 0 {
		refs := make([]string, 0, len(out))
		for r := range out {
			refs = append(refs, r)
		}
		slices.SortFunc(refs, func(a, b string) int { return out[b].At.Compare(out[a].At) })
		for _, r := range refs[limit:] {
			delete(out, r)
		}
	}
	return out, err
}

// IsParked reports whether ref is parked.
func (s *Store) IsParked(ref string) (bool, error) {
	var ok bool
	err := s.view(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketParked).Get([]byte(ref)) != nil
		return nil
	})
	return ok, err
}
