package state

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// migrateV1 brings a version 1 file to version 2: queue items are
// re-encoded (protobuf changes become our own encoding with the entity as
// JSON; a full-snapshot flag becomes the snapshot meta key), and the claims
// index and owned counts are built from the records. An item that cannot be
// converted goes to the quarantine with the reason; nothing is dropped.
func migrateV1(tx *bolt.Tx) error {
	q := tx.Bucket(bucketQueue)
	type conv struct {
		k, v []byte
		err  error
	}
	var items []conv
	var snapshot int64
	if err := q.ForEach(func(k, v []byte) error {
		nv, snap, err := convertV1Item(v)
		if snap > snapshot {
			snapshot = snap
		}
		items = append(items, conv{append([]byte(nil), k...), nv, err})
		return nil
	}); err != nil {
		return err
	}
	qb := tx.Bucket(bucketQuarantine)
	for _, it := range items {
		if it.err != nil {
			if err := q.Delete(it.k); err != nil {
				return err
			}
			b := binary.AppendVarint(nil, time.Now().UnixMilli())
			b = appendString(b, "schema 1 item could not be converted: "+it.err.Error())
			b = binary.AppendUvarint(b, 0)
			if err := qb.Put(it.k, b); err != nil {
				return err
			}
			continue
		}
		if err := q.Put(it.k, it.v); err != nil {
			return err
		}
	}
	if snapshot != 0 {
		if err := tx.Bucket(bucketMeta).Put([]byte(metaSnapshot), binary.AppendVarint(nil, snapshot)); err != nil {
			return err
		}
	}
	counts := map[string]int64{}
	return func() error {
		err := tx.Bucket(bucketRefs).ForEach(func(k, v []byte) error {
			rec, err := decodeRef(string(k), v)
			if err != nil {
				return fmt.Errorf("ref %s: %w", k, err)
			}
			return reindexRef(tx, string(k), nil, rec.Keys(), counts)
		})
		if err != nil {
			return err
		}
		return addCounts(tx, counts)
	}()
}

// convertV1Item re-encodes one schema 1 queue item: varint received time,
// a flags byte (1: full snapshot), a length-prefixed source, then a
// portbridge.v1.Change in protobuf. It returns the new item and, for a
// full-snapshot item, its received time.
func convertV1Item(v []byte) ([]byte, int64, error) {
	nanos, n := binary.Varint(v)
	if n <= 0 || len(v) < n+1 {
		return nil, 0, fmt.Errorf("corrupt header")
	}
	flags := v[n]
	v = v[n+1:]
	sl, n := binary.Uvarint(v)
	if n <= 0 || uint64(len(v)-n) < sl {
		return nil, 0, fmt.Errorf("corrupt source")
	}
	body := v[n+int(sl):]
	var c Change
	upsert := false
	for len(body) > 0 {
		num, typ, l := protowire.ConsumeTag(body)
		if l < 0 {
			return nil, 0, protowire.ParseError(l)
		}
		body = body[l:]
		var val []byte
		if typ == protowire.BytesType {
			val, l = protowire.ConsumeBytes(body)
		} else {
			l = protowire.ConsumeFieldValue(num, typ, body)
		}
		if l < 0 {
			return nil, 0, protowire.ParseError(l)
		}
		body = body[l:]
		switch num {
		case 1:
			c.Ref = string(val)
		case 2:
			c.UID = string(val)
		case 3:
			c.Etag = string(val)
		case 4:
			t, err := timestampV1(val)
			if err != nil {
				return nil, 0, fmt.Errorf("observed_at: %w", err)
			}
			c.ObservedAt = t
		case 5:
			upsert = true
			ent, err := entityV1(val)
			if err != nil {
				return nil, 0, fmt.Errorf("entity: %w", err)
			}
			c.Entity = ent
		case 6:
			c.Deleted = true
		}
	}
	if c.Ref == "" || upsert == c.Deleted {
		return nil, 0, fmt.Errorf("not a change (ref %q)", c.Ref)
	}
	var snap int64
	if flags&1 != 0 {
		snap = nanos
	}
	return encodeQueued(time.Unix(0, nanos), c), snap, nil
}

func timestampV1(b []byte) (time.Time, error) {
	var sec, nsec int64
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 || typ != protowire.VarintType {
			return time.Time{}, fmt.Errorf("corrupt timestamp")
		}
		b = b[l:]
		v, l := protowire.ConsumeVarint(b)
		if l < 0 {
			return time.Time{}, protowire.ParseError(l)
		}
		b = b[l:]
		switch num {
		case 1:
			sec = int64(v)
		case 2:
			nsec = int64(int32(v))
		}
	}
	return time.Unix(sec, nsec), nil
}

// entityV1 turns an Upserted message (field 1: google.protobuf.Struct)
// into entity JSON.
func entityV1(b []byte) (json.RawMessage, error) {
	var st structpb.Struct
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		b = b[l:]
		if num == 1 && typ == protowire.BytesType {
			val, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return nil, protowire.ParseError(l)
			}
			if err := proto.Unmarshal(val, &st); err != nil {
				return nil, err
			}
			b = b[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(num, typ, b)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		b = b[l:]
	}
	return json.Marshal(st.AsMap())
}
