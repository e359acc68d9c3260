package state

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Change is one change notification as the queue stores it.
type Change struct {
	// Ref is the entity's canonical ref (kind:namespace/name, lower case).
	Ref  string
	UID  string
	Etag string
	// ObservedAt is when the publisher saw this state.
	ObservedAt time.Time
	// Deleted marks a removal; otherwise Entity holds the entity as JSON.
	Deleted bool
	Entity  json.RawMessage
}

// QueuedChange is one stored change notification.
type QueuedChange struct {
	// Seq orders the queue; it grows with every stored change.
	Seq uint64
	// ReceivedAt is when the sidecar stored it.
	ReceivedAt time.Time
	Change
}

// QueueRef is the small part of a queued change that the engine keeps in
// memory to coalesce by entity: it reads the body with QueueGet when it
// applies it.
type QueueRef struct {
	Seq        uint64
	Ref        string
	ObservedAt time.Time
	ReceivedAt time.Time
	Deleted    bool
}

// metaSnapshot holds the time of the newest stored full snapshot whose
// reconciling resync has not finished yet.
const metaSnapshot = "~snapshot"

const (
	flagDeleted = 1 << iota
)

// Enqueue stores a batch of changes in one write transaction and returns
// after it is on disk (fsync), so an acknowledged batch survives kill -9 and
// power loss. With fullSnapshot it also records that a reconciling resync is
// owed, so the request survives a restart. Concurrent calls are coalesced
// into shared transactions.
func (s *Store) Enqueue(ctx context.Context, changes []Change, fullSnapshot bool) ([]QueueRef, uint64, error) {
	if len(changes) == 0 && !fullSnapshot {
		return nil, s.QueueDepth(), nil
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("enqueue %d changes: %w", len(changes), err)
	}
	now := time.Now()
	bodies := make([][]byte, len(changes))
	for i, c := range changes {
		if !c.Deleted && !json.Valid(c.Entity) {
			return nil, 0, fmt.Errorf("enqueue change %d (%s): entity is not valid JSON", i, c.Ref)
		}
		bodies[i] = encodeQueued(now, c)
	}
	refs := make([]QueueRef, len(changes))
	// Batch may run the function more than once if a transaction it shares
	// fails; every run starts from scratch, so that is safe.
	err := s.db.Batch(func(tx *bolt.Tx) error {
		q := tx.Bucket(bucketQueue)
		for i, c := range changes {
			seq, err := q.NextSequence()
			if err != nil {
				return err
			}
			if err := q.Put(binary.BigEndian.AppendUint64(nil, seq), bodies[i]); err != nil {
				return err
			}
			refs[i] = QueueRef{Seq: seq, Ref: c.Ref, ObservedAt: c.ObservedAt, ReceivedAt: now, Deleted: c.Deleted}
		}
		if fullSnapshot {
			return tx.Bucket(bucketMeta).Put([]byte(metaSnapshot), binary.AppendVarint(nil, now.UnixNano()))
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("enqueue %d changes into %s: %w", len(changes), s.path, err)
	}
	s.mu.Lock()
	s.queueDepth += uint64(len(changes))
	depth := s.queueDepth
	s.mu.Unlock()
	return refs, depth, nil
}

// SnapshotPending returns when the newest full snapshot whose reconciling
// resync is owed was stored.
func (s *Store) SnapshotPending() (time.Time, bool, error) {
	v, err := s.GetMeta(metaSnapshot)
	if err != nil || v == nil {
		return time.Time{}, false, err
	}
	n, k := binary.Varint(v)
	if k <= 0 {
		return time.Time{}, false, fmt.Errorf("state file %s: corrupt snapshot flag", s.path)
	}
	return time.Unix(0, n), true, nil
}

// SnapshotDone records that a resync started at started reconciled every
// snapshot stored before it.
func (s *Store) SnapshotDone(started time.Time) error {
	return s.update(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMeta)
		v := mb.Get([]byte(metaSnapshot))
		if v == nil {
			return nil
		}
		if n, k := binary.Varint(v); k > 0 && time.Unix(0, n).After(started) {
			return nil // a newer snapshot arrived during the resync
		}
		return mb.Delete([]byte(metaSnapshot))
	})
}

// The item encoding: received time, flags, ref, uid, etag, observed time,
// then the entity JSON to the end.
func encodeQueued(now time.Time, c Change) []byte {
	b := make([]byte, 0, len(c.Entity)+len(c.Ref)+len(c.UID)+len(c.Etag)+32)
	b = binary.AppendVarint(b, now.UnixNano())
	var flags byte
	if c.Deleted {
		flags |= flagDeleted
	}
	b = append(b, flags)
	b = appendString(b, c.Ref)
	b = appendString(b, c.UID)
	b = appendString(b, c.Etag)
	b = binary.AppendVarint(b, c.ObservedAt.UnixNano())
	if !c.Deleted {
		b = append(b, c.Entity...)
	}
	return b
}

// errCorruptItem marks a queue item that cannot be decoded.
var errCorruptItem = errors.New("corrupt queue item")

func decodeQueued(seq uint64, v []byte) (QueuedChange, error) {
	r := &reader{b: v}
	received := r.varint()
	if r.err != nil || len(r.b) < 1 {
		return QueuedChange{}, fmt.Errorf("queue item %d: %w: header", seq, errCorruptItem)
	}
	flags := r.b[0]
	r.b = r.b[1:]
	c := Change{Ref: r.string(), UID: r.string(), Etag: r.string()}
	observed := r.varint()
	if r.err != nil {
		return QueuedChange{}, fmt.Errorf("queue item %d: %w: %v", seq, errCorruptItem, r.err)
	}
	if c.Ref == "" {
		return QueuedChange{}, fmt.Errorf("queue item %d: %w: no entity ref", seq, errCorruptItem)
	}
	c.ObservedAt = time.Unix(0, observed)
	c.Deleted = flags&flagDeleted != 0
	if !c.Deleted {
		if !json.Valid(r.b) {
			return QueuedChange{}, fmt.Errorf("queue item %d (%s): %w: entity is not valid JSON", seq, c.Ref, errCorruptItem)
		}
		// A copy: bbolt's value memory is only valid inside its
		// transaction.
		c.Entity = json.RawMessage(append([]byte(nil), r.b...))
	}
	return QueuedChange{Seq: seq, ReceivedAt: time.Unix(0, received), Change: c}, nil
}

// QueueGet reads one stored change. ok is false when it was acknowledged
// (or quarantined). An item that cannot be decoded is moved to the
// quarantine and reported as an error wrapping ErrQuarantined.
func (s *Store) QueueGet(seq uint64) (qc QueuedChange, ok bool, err error) {
	var raw []byte
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketQueue).Get(binary.BigEndian.AppendUint64(nil, seq))
		if v == nil {
			return nil
		}
		ok = true
		qc, err = decodeQueued(seq, v)
		if err != nil {
			raw = append([]byte(nil), v...)
		}
		return err
	})
	if err != nil && raw != nil {
		if qerr := s.quarantine(seq, raw, err.Error()); qerr != nil {
			return qc, false, errors.Join(err, qerr)
		}
		return qc, false, fmt.Errorf("%w: %w", ErrQuarantined, err)
	}
	return qc, ok, err
}

// ErrQuarantined is wrapped by errors about queue items moved to the
// quarantine.
var ErrQuarantined = errors.New("moved to the quarantine")

// QueueScan calls fn for every stored change in order, with its full body,
// reading in short transactions. Items that cannot be decoded are moved to
// the quarantine (with the reason) and reported to bad; the scan goes on.
// It is meant for start-up, to rebuild the in-memory index.
func (s *Store) QueueScan(fn func(QueuedChange) error, bad func(seq uint64, err error)) error {
	var after uint64
	first := true
	for {
		type item struct {
			seq uint64
			raw []byte
			qc  QueuedChange
			err error
		}
		var chunk []item
		err := s.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketQueue).Cursor()
			var k, v []byte
			if first {
				k, v = c.First()
			} else {
				k, v = c.Seek(binary.BigEndian.AppendUint64(nil, after+1))
			}
			for ; k != nil && len(chunk) < refChunk; k, v = c.Next() {
				if len(k) != 8 {
					chunk = append(chunk, item{raw: append([]byte(nil), v...), err: fmt.Errorf("queue key %x: %w: not a sequence number", k, errCorruptItem)})
					continue
				}
				seq := binary.BigEndian.Uint64(k)
				qc, err := decodeQueued(seq, v)
				it := item{seq: seq, qc: qc, err: err}
				if err != nil {
					it.raw = append([]byte(nil), v...)
				}
				chunk = append(chunk, it)
			}
			return nil
		})
		if err != nil {
			return err
		}
		first = false
		for _, it := range chunk {
			if it.seq > after {
				after = it.seq
			}
			if it.err != nil {
				if qerr := s.quarantine(it.seq, it.raw, it.err.Error()); qerr != nil {
					return qerr
				}
				if bad != nil {
					bad(it.seq, it.err)
				}
				continue
			}
			if err := fn(it.qc); err != nil {
				return err
			}
		}
		if len(chunk) < refChunk {
			return nil
		}
	}
}

// QueueAck removes applied changes. Unknown sequence numbers are ignored.
func (s *Store) QueueAck(seqs ...uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	var removed uint64
	err := s.db.Batch(func(tx *bolt.Tx) error {
		removed = 0
		q := tx.Bucket(bucketQueue)
		for _, seq := range seqs {
			k := binary.BigEndian.AppendUint64(nil, seq)
			if q.Get(k) == nil {
				continue
			}
			if err := q.Delete(k); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("acknowledge %d queue items in %s: %w", len(seqs), s.path, err)
	}
	s.mu.Lock()
	s.queueDepth -= min(removed, s.queueDepth)
	s.mu.Unlock()
	return nil
}

// QueueDepth is the number of stored, unacknowledged changes.
func (s *Store) QueueDepth() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queueDepth
}

// QueueOldest returns when the oldest stored change was received.
func (s *Store) QueueOldest() (time.Time, bool) {
	var t time.Time
	var ok bool
	_ = s.view(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketQueue).Cursor().First()
		if k == nil {
			return nil
		}
		if nanos, n := binary.Varint(v); n > 0 {
			t, ok = time.Unix(0, nanos), true
		}
		return nil
	})
	return t, ok
}

// Quarantined is a queue item that could not be decoded or applied, kept
// for inspection.
type Quarantined struct {
	Seq    uint64
	At     time.Time
	Reason string
	// Size is the item's size; Head its first bytes.
	Size int
	Head []byte
}

// quarantineKeep bounds the bytes of an item kept in the quarantine.
const quarantineKeep = 4 << 10

// quarantine moves a queue item to the quarantine with why.
func (s *Store) quarantine(seq uint64, raw []byte, reason string) error {
	var moved bool
	err := s.update(func(tx *bolt.Tx) error {
		k := binary.BigEndian.AppendUint64(nil, seq)
		q := tx.Bucket(bucketQueue)
		if q.Get(k) != nil {
			if err := q.Delete(k); err != nil {
				return err
			}
			moved = true
		}
		b := binary.AppendVarint(nil, time.Now().UnixMilli())
		b = appendString(b, reason)
		b = binary.AppendUvarint(b, uint64(len(raw)))
		b = append(b, raw[:min(len(raw), quarantineKeep)]...)
		return tx.Bucket(bucketQuarantine).Put(k, b)
	})
	if err != nil {
		return fmt.Errorf("quarantine queue item %d in %s: %w", seq, s.path, err)
	}
	if moved {
		s.mu.Lock()
		s.queueDepth -= min(1, s.queueDepth)
		s.mu.Unlock()
	}
	return nil
}

// Quarantine moves a stored change that cannot be applied (its entity
// cannot be mapped at all) to the quarantine, with why.
func (s *Store) Quarantine(seq uint64, reason string) error {
	var raw []byte
	if err := s.view(func(tx *bolt.Tx) error {
		raw = append([]byte(nil), tx.Bucket(bucketQueue).Get(binary.BigEndian.AppendUint64(nil, seq))...)
		return nil
	}); err != nil {
		return err
	}
	return s.quarantine(seq, raw, reason)
}

// QuarantineCount is the number of quarantined items.
func (s *Store) QuarantineCount() (int, error) {
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketQuarantine).Stats().KeyN
		return nil
	})
	return n, err
}

// QuarantineList returns up to limit quarantined items, newest first.
func (s *Store) QuarantineList(limit int) ([]Quarantined, error) {
	var out []Quarantined
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketQuarantine).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			r := &reader{b: v}
			q := Quarantined{At: time.UnixMilli(r.varint()), Reason: r.string()}
			q.Size = int(r.uvarint())
			if len(k) == 8 {
				q.Seq = binary.BigEndian.Uint64(k)
			}
			if r.err != nil {
				q.Reason = "unreadable quarantine record: " + r.err.Error()
			} else {
				q.Head = append([]byte(nil), r.b...)
			}
			out = append(out, q)
		}
		return nil
	})
	return out, err
}
