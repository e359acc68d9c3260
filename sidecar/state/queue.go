package state

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
)

// QueuedChange is one stored change notification.
type QueuedChange struct {
	// Seq orders the queue; it grows with every stored change.
	Seq uint64
	// ReceivedAt is when the sidecar stored it.
	ReceivedAt time.Time
	// FullSnapshot is the batch's full_snapshot flag.
	FullSnapshot bool
	// Source names the publisher.
	Source string
	// Change is the notification as published (validated and normalised).
	Change *portbridgev1.Change
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

const flagFullSnapshot = 1

// Enqueue stores a batch of changes in one write transaction and returns
// after it is on disk (fsync), so an acknowledged batch survives kill -9 and
// power loss. Concurrent calls are coalesced into shared transactions.
func (s *Store) Enqueue(ctx context.Context, changes []*portbridgev1.Change, fullSnapshot bool, source string) ([]QueueRef, uint64, error) {
	if len(changes) == 0 {
		return nil, s.QueueDepth(), nil
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("enqueue %d changes: %w", len(changes), err)
	}
	now := time.Now()
	bodies := make([][]byte, len(changes))
	for i, c := range changes {
		b, err := encodeQueued(now, fullSnapshot, source, c)
		if err != nil {
			return nil, 0, fmt.Errorf("enqueue change %d (%s): %w", i, c.GetEntityRef(), err)
		}
		bodies[i] = b
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
			refs[i] = QueueRef{Seq: seq, Ref: c.GetEntityRef(), ObservedAt: c.GetObservedAt().AsTime(), ReceivedAt: now, Deleted: c.GetDeleted() != nil}
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

func encodeQueued(now time.Time, fullSnapshot bool, source string, c *portbridgev1.Change) ([]byte, error) {
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil, err
	}
	var flags byte
	if fullSnapshot {
		flags |= flagFullSnapshot
	}
	b := make([]byte, 0, len(body)+len(source)+16)
	b = binary.AppendVarint(b, now.UnixNano())
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(source)))
	b = append(b, source...)
	return append(b, body...), nil
}

func decodeQueued(seq uint64, v []byte) (QueuedChange, error) {
	nanos, n := binary.Varint(v)
	if n <= 0 || len(v) < n+1 {
		return QueuedChange{}, fmt.Errorf("queue item %d: corrupt header", seq)
	}
	flags := v[n]
	v = v[n+1:]
	sl, n := binary.Uvarint(v)
	if n <= 0 || uint64(len(v)-n) < sl {
		return QueuedChange{}, fmt.Errorf("queue item %d: corrupt source", seq)
	}
	source := string(v[n : n+int(sl)])
	c := &portbridgev1.Change{}
	if err := proto.Unmarshal(v[n+int(sl):], c); err != nil {
		return QueuedChange{}, fmt.Errorf("queue item %d: %w", seq, err)
	}
	return QueuedChange{Seq: seq, ReceivedAt: time.Unix(0, nanos), FullSnapshot: flags&flagFullSnapshot != 0, Source: source, Change: c}, nil
}

// QueueGet reads one stored change. ok is false when it was acknowledged.
func (s *Store) QueueGet(seq uint64) (qc QueuedChange, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketQueue).Get(binary.BigEndian.AppendUint64(nil, seq))
		if v == nil {
			return nil
		}
		ok = true
		qc, err = decodeQueued(seq, v)
		return err
	})
	return qc, ok, err
}

// QueueScan calls fn for every stored change in order, with its full body.
// It is meant for start-up, to rebuild the in-memory index.
func (s *Store) QueueScan(fn func(QueuedChange) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQueue).ForEach(func(k, v []byte) error {
			qc, err := decodeQueued(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			return fn(qc)
		})
	})
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
	_ = s.db.View(func(tx *bolt.Tx) error {
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
