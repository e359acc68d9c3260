package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
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

func (k Key) bytes() []byte {
	b := make([]byte, 0, len(k.Blueprint)+1+len(k.Identifier))
	b = append(b, k.Blueprint...)
	b = append(b, 0)
	return append(b, k.Identifier...)
}

func parseKey(b []byte) (Key, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return Key{}, fmt.Errorf("corrupt entity key %q", b)
	}
	return Key{Blueprint: string(b[:i]), Identifier: string(b[i+1:])}, nil
}

// EntityRecord is what the sidecar remembers of a Port entity it wrote. Its
// presence is the ownership record: only entities with a record are ever
// deleted by the sidecar.
type EntityRecord struct {
	// Hash of the mapped entity last confirmed by Port.
	Hash uint64
	// Ref is the Backstage entity that produced it.
	Ref string
	// PushedAt is when Port confirmed it (millisecond precision).
	PushedAt time.Time
}

// The encodings are compact because a catalog has one record of each kind
// per entity (DESIGN: ≤ 200 bytes per entity on disk): times are varint
// milliseconds, and a ref or identifier equal to the one the record's key
// already names is stored as an empty string (Port identifiers default to the
// Backstage ref).

// encode writes hash, push time and the ref unless it equals k's identifier.
func (r EntityRecord) encode(k Key) []byte {
	b := make([]byte, 8, 8+binary.MaxVarintLen64+len(r.Ref))
	binary.BigEndian.PutUint64(b, r.Hash)
	b = binary.AppendVarint(b, r.PushedAt.UnixMilli())
	if r.Ref == k.Identifier {
		return b
	}
	return append(b, r.Ref...)
}

func decodeEntity(k Key, v []byte) (EntityRecord, error) {
	if len(v) < 9 {
		return EntityRecord{}, fmt.Errorf("corrupt entity record of %d bytes", len(v))
	}
	ms, n := binary.Varint(v[8:])
	if n <= 0 {
		return EntityRecord{}, fmt.Errorf("corrupt entity record time")
	}
	ref := string(v[8+n:])
	if ref == "" {
		ref = k.Identifier
	}
	return EntityRecord{Hash: binary.BigEndian.Uint64(v), PushedAt: time.UnixMilli(ms), Ref: ref}, nil
}

// RefRecord is what the sidecar remembers of a Backstage entity.
type RefRecord struct {
	// ObservedAt is the newest observation applied for this entity
	// (millisecond precision); an older observation never overwrites it.
	ObservedAt time.Time
	// Keys are the Port entities it produced.
	Keys []Key
}

// encode writes the observation time and the keys; an identifier equal to
// ref, and a blueprint equal to the ref's kind, are stored empty.
func (r RefRecord) encode(ref string) []byte {
	kind := refKind(ref)
	b := binary.AppendVarint(nil, r.ObservedAt.UnixMilli())
	b = binary.AppendUvarint(b, uint64(len(r.Keys)))
	for _, k := range r.Keys {
		if k.Blueprint == kind {
			b = appendString(b, "")
		} else {
			b = appendString(b, k.Blueprint)
		}
		if k.Identifier == ref {
			b = appendString(b, "")
		} else {
			b = appendString(b, k.Identifier)
		}
	}
	return b
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

// refKind is the kind part of a canonical ref ("component" for
// "component:default/x").
func refKind(ref string) string {
	if i := strings.IndexByte(ref, ':'); i > 0 {
		return ref[:i]
	}
	return ""
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
		r.err = fmt.Errorf("corrupt key count %d", count)
	}
	kind := refKind(ref)
	for i := uint64(0); i < count && r.err == nil; i++ {
		k := Key{Blueprint: r.string(), Identifier: r.string()}
		if k.Blueprint == "" {
			k.Blueprint = kind
		}
		if k.Identifier == "" {
			k.Identifier = ref
		}
		rec.Keys = append(rec.Keys, k)
	}
	return rec, r.err
}

// Lookup returns the records of keys; found[i] tells whether keys[i] has one.
// It reads all of them in one transaction.
func (s *Store) Lookup(keys []Key) (recs []EntityRecord, found []bool, err error) {
	recs = make([]EntityRecord, len(keys))
	found = make([]bool, len(keys))
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntities)
		for i, k := range keys {
			v := b.Get(k.bytes())
			if v == nil {
				continue
			}
			rec, err := decodeEntity(k, v)
			if err != nil {
				return fmt.Errorf("entity %s: %w", k, err)
			}
			recs[i], found[i] = rec, true
		}
		return nil
	})
	return recs, found, err
}

// Refs returns the records of Backstage refs; found[i] tells whether refs[i]
// has one.
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

// Write is a set of record changes committed together.
type Write struct {
	PutEntities    map[Key]EntityRecord
	DeleteEntities []Key
	PutRefs        map[string]RefRecord
	DeleteRefs     []string
}

// Empty reports whether w changes nothing.
func (w *Write) Empty() bool {
	return len(w.PutEntities) == 0 && len(w.DeleteEntities) == 0 && len(w.PutRefs) == 0 && len(w.DeleteRefs) == 0
}

// Commit applies w in one short write transaction (shared with concurrent
// commits through bbolt's batching).
func (s *Store) Commit(w Write) error {
	if w.Empty() {
		return nil
	}
	err := s.db.Batch(func(tx *bolt.Tx) error {
		eb, rb := tx.Bucket(bucketEntities), tx.Bucket(bucketRefs)
		for _, k := range w.DeleteEntities {
			if err := eb.Delete(k.bytes()); err != nil {
				return err
			}
		}
		for k, rec := range w.PutEntities {
			if err := eb.Put(k.bytes(), rec.encode(k)); err != nil {
				return fmt.Errorf("entity %s: %w", k, err)
			}
		}
		for _, r := range w.DeleteRefs {
			if err := rb.Delete([]byte(r)); err != nil {
				return err
			}
		}
		for r, rec := range w.PutRefs {
			if err := rb.Put([]byte(r), rec.encode(r)); err != nil {
				return fmt.Errorf("ref %s: %w", r, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit state to %s: %w", s.path, err)
	}
	return nil
}

// ForEachEntity calls fn for every owned Port entity, in key order, inside
// one read transaction: fn must not call back into the Store's writers.
func (s *Store) ForEachEntity(fn func(Key, EntityRecord) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEntities).ForEach(func(k, v []byte) error {
			key, err := parseKey(k)
			if err != nil {
				return err
			}
			rec, err := decodeEntity(key, v)
			if err != nil {
				return fmt.Errorf("entity %s: %w", key, err)
			}
			return fn(key, rec)
		})
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
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEntities).ForEach(func(k, _ []byte) error {
			if i := bytes.IndexByte(k, 0); i >= 0 {
				out[string(k[:i])]++
			}
			return nil
		})
	})
	return out, err
}

// Counts returns the number of entity and ref records.
func (s *Store) Counts() (entities, refs int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		entities = tx.Bucket(bucketEntities).Stats().KeyN
		refs = tx.Bucket(bucketRefs).Stats().KeyN
		return nil
	})
	return entities, refs, err
}
