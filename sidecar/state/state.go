// Package state is the sidecar's one bbolt file: the durable queue of change
// notifications not yet applied; one record per Backstage entity with the
// Port entities it produced (their hashes: the ownership record), and the
// newest observation applied; and bookkeeping.
//
// The file is an optimisation and an ownership record. Losing it makes the
// next resync push everything again and, because nothing is owned any more,
// delete nothing: it never leads to wrong deletes.
package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this code reads and writes. Open migrates older
// files and refuses newer ones.
const SchemaVersion = 1

var (
	bucketMeta  = []byte("meta")
	bucketQueue = []byte("queue")
	bucketRefs  = []byte("refs")

	keySchema = []byte("schema")
)

// Options tune Open.
type Options struct {
	// LockTimeout is how long Open waits for another process's lock on the
	// file before it gives up. Default 1s.
	LockTimeout time.Duration
	// NoSync skips fsync on commit. Only for benchmarks of what fsync costs;
	// never set it in production: acknowledged changes could be lost.
	NoSync bool
}

// Store is an open state file. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string

	mu         sync.Mutex // guards depth
	queueDepth uint64
}

// ErrLocked is returned by Open when another process holds the file.
var ErrLocked = errors.New("state file is locked by another process")

// Open opens (or creates, mode 0600) the state file at path, takes its
// exclusive lock, and migrates it to SchemaVersion.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("open state file: no path given")
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoSync: opts.NoSync, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open state file %s: %w (is another portbridge running with the same state.path?)", path, ErrLocked)
		}
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	// bbolt creates new files with the mode given, but an existing file
	// keeps its own: tighten it.
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("restrict state file %s to mode 0600: %w", path, err)
		}
	}
	// Grow the file 1 MiB at a time instead of bbolt's 16 MiB, so the file
	// stays close to what it holds.
	db.AllocSize = 1 << 20
	s := &Store{db: db, path: path}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		ver := uint64(0)
		if v := meta.Get(keySchema); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("meta key %q: corrupt value of %d bytes", keySchema, len(v))
			}
			ver = binary.BigEndian.Uint64(v)
		}
		if ver > SchemaVersion {
			return fmt.Errorf("schema version %d was written by a newer portbridge (this one reads up to %d); move the file away to start over", ver, SchemaVersion)
		}
		for _, b := range [][]byte{bucketQueue, bucketRefs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := migrate(tx, ver); err != nil {
			return err
		}
		if err := meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, SchemaVersion)); err != nil {
			return err
		}
		s.queueDepth = uint64(tx.Bucket(bucketQueue).Stats().KeyN)
		return nil
	})
}

// migrate brings a file from version from to SchemaVersion inside tx. Each
// future layout change adds a step here; version 0 is a new, empty file.
func migrate(_ *bolt.Tx, from uint64) error {
	switch from {
	case 0, SchemaVersion:
		return nil
	default:
		return fmt.Errorf("no migration from schema version %d", from)
	}
}

// Path returns the file's path.
func (s *Store) Path() string { return s.path }

// Close releases the file and its lock.
func (s *Store) Close() error { return s.db.Close() }

// Size returns the file's size in bytes.
func (s *Store) Size() (int64, error) {
	st, err := os.Stat(s.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	return st.Size(), nil
}

// GetMeta reads a bookkeeping value; nil when absent.
func (s *Store) GetMeta(key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get([]byte(key)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// PutMeta writes a bookkeeping value.
func (s *Store) PutMeta(key string, value []byte) error {
	if key == string(keySchema) {
		return fmt.Errorf("meta key %q is reserved", key)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte(key), value)
	})
}
