package state

import (
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

// Output is a Port entity the sidecar wrote for a Backstage entity. Its
// presence is the ownership record: only outputs are ever deleted by the
// sidecar.
type Output struct {
	Key
	// Hash of the mapped entity last confirmed by Port.
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
	// Outputs are the Port entities it produced and Port confirmed.
	Outputs []Output
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

// EntityRecord is one output seen from the Port side, with the ref that
// produced it.
type EntityRecord struct {
	Hash     uint64
	Ref      string
	PushedAt time.Time
}

// The encoding is compact because a catalog has one record per entity
// (DESIGN: ≤ 200 bytes per entity on disk): times are varint milliseconds,
// a blueprint equal to the ref's kind and an identifier equal to the ref
// (Port identifiers default to the Backstage ref) are stored empty.
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
	return rec, r.err
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
	err = s.db.View(func(tx *bolt.Tx) error {
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

// Write is a set of record changes committed together, applied in the
// order of the fields.
type Write struct {
	// PutRefs replaces whole records.
	PutRefs map[string]RefRecord
	// Confirm adds or replaces outputs of refs (creating the record if
	// needed) without touching their observation time: Port confirmed them.
	Confirm map[string][]Output
	// Remove drops outputs of refs (deleted in Port).
	Remove map[string][]Key
	// DeleteRefs drops whole records.
	DeleteRefs []string
}

// Empty reports whether w changes nothing.
func (w *Write) Empty() bool {
	return len(w.PutRefs) == 0 && len(w.Confirm) == 0 && len(w.Remove) == 0 && len(w.DeleteRefs) == 0
}

// Commit applies w in one short write transaction (shared with concurrent
// commits through bbolt's batching).
func (s *Store) Commit(w Write) error {
	if w.Empty() {
		return nil
	}
	err := s.db.Batch(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRefs)
		for r, rec := range w.PutRefs {
			if err := rb.Put([]byte(r), rec.encode(r)); err != nil {
				return fmt.Errorf("ref %s: %w", r, err)
			}
		}
		update := func(r string, fn func(*RefRecord)) error {
			var rec RefRecord
			if v := rb.Get([]byte(r)); v != nil {
				var err error
				if rec, err = decodeRef(r, v); err != nil {
					return fmt.Errorf("ref %s: %w", r, err)
				}
			}
			fn(&rec)
			return rb.Put([]byte(r), rec.encode(r))
		}
		for r, outs := range w.Confirm {
			err := update(r, func(rec *RefRecord) {
				for _, o := range outs {
					if i := slices.IndexFunc(rec.Outputs, func(x Output) bool { return x.Key == o.Key }); i >= 0 {
						rec.Outputs[i] = o
					} else {
						rec.Outputs = append(rec.Outputs, o)
					}
				}
			})
			if err != nil {
				return err
			}
		}
		for r, keys := range w.Remove {
			if rb.Get([]byte(r)) == nil {
				continue
			}
			err := update(r, func(rec *RefRecord) {
				rec.Outputs = slices.DeleteFunc(rec.Outputs, func(o Output) bool { return slices.Contains(keys, o.Key) })
			})
			if err != nil {
				return err
			}
		}
		for _, r := range w.DeleteRefs {
			if err := rb.Delete([]byte(r)); err != nil {
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

// ForEachEntity calls fn for every owned Port entity, ref by ref, inside one
// read transaction: fn must not call back into the Store's writers.
func (s *Store) ForEachEntity(fn func(Key, EntityRecord) error) error {
	return s.ForEachRef(func(ref string, rec RefRecord) error {
		for _, o := range rec.Outputs {
			if err := fn(o.Key, EntityRecord{Hash: o.Hash, Ref: ref, PushedAt: o.PushedAt}); err != nil {
				return err
			}
		}
		return nil
	})
}

// ForEachRef calls fn for every known Backstage ref, inside one read
// transaction.
func (s *Store) ForEachRef(fn func(string, RefRecord) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRefs).ForEach(func(k, v []byte) error {
			rec, err := decodeRef(string(k), v)
			if err != nil {
				return fmt.Errorf("ref %s: %w", k, err)
			}
			return fn(string(k), rec)
		})
	})
}

// OwnedCounts returns how many Port entities the sidecar owns per blueprint.
func (s *Store) OwnedCounts() (map[string]uint64, error) {
	out := map[string]uint64{}
	err := s.ForEachEntity(func(k Key, _ EntityRecord) error {
		out[k.Blueprint]++
		return nil
	})
	return out, err
}

// Counts returns the number of owned Port entities and of ref records.
func (s *Store) Counts() (entities, refs int, err error) {
	err = s.ForEachRef(func(_ string, rec RefRecord) error {
		refs++
		entities += len(rec.Outputs)
		return nil
	})
	return entities, refs, err
}
