// Package state is the sidecar's one bbolt file: the durable queue of change
// notifications not yet applied; one record per Backstage entity with the
// Port entities it produced (their hashes: the ownership record) and the
// newest observation applied; an index of Port entities claimed by a ref
// other than their own; owned counts per blueprint; parked entities and
// quarantined queue records; and bookkeeping.
//
// The file is a cache and an ownership record. Losing it makes the next
// resync push everything again and, because nothing is owned any more,
// delete nothing: it never leads to wrong deletes. A file that is damaged
// (truncated, not a state file) is refused at Open with an error that names
// it, never a crash.
package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this code reads and writes. Open migrates older
// files and refuses newer ones.
//
//	1: queue items hold protobuf changes; no claims index, counts or parking
//	2: queue items hold our own encoding with the entity as JSON; claims
//	   index; owned counts; parked and quarantine buckets
const SchemaVersion = 2

var (
	bucketMeta       = []byte("meta")
	bucketQueue      = []byte("queue")
	bucketRefs       = []byte("refs")
	bucketClaims     = []byte("claims")
	bucketParked     = []byte("parked")
	bucketQuarantine = []byte("quarantine")

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
	// id is the identity (device and inode) of the file opened, to notice
	// a file deleted or replaced underneath.
	id os.FileInfo

	mu         sync.Mutex // guards queueDepth
	queueDepth uint64
}

// ErrLocked is returned by Open when another process holds the file.
var ErrLocked = errors.New("state file is locked by another process")

// ErrDamaged is returned (wrapped) by Open for a file that is truncated or
// not a portbridge state file.
var ErrDamaged = errors.New("state file is damaged")

// Open opens (or creates, mode 0600) the state file at path, takes its
// exclusive lock, and migrates it to SchemaVersion. A damaged file gives an
// error wrapping ErrDamaged that names the file and what to do.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("open state file: no path given")
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if err := checkFile(path); err != nil {
		return nil, err
	}
	db, err := openBolt(path, opts)
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open state file %s: %w (is another portbridge running with the same state.path?)", path, ErrLocked)
		}
		if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) || errors.Is(err, ErrDamaged) {
			return nil, damaged(path, err)
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
	// The identity of the file just opened (bbolt holds its descriptor).
	id, err := os.Stat(path)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	s := &Store{db: db, path: path, id: id}
	if err := s.init(); err != nil {
		_ = db.Close()
		if errors.Is(err, ErrDamaged) {
			return nil, damaged(path, err)
		}
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	return s, nil
}

func damaged(path string, err error) error {
	return fmt.Errorf("open state file %s: %w: %v; move it away (or delete it) and start again: the next resync rebuilds it without deleting anything", path, ErrDamaged, err)
}

// openBolt opens the file with memory faults turned into errors: a file
// that is shorter than bbolt believes would otherwise end the process with
// SIGBUS.
func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				_ = db.Close()
			}
			db, err = nil, fmt.Errorf("%w: %v", ErrDamaged, r)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoSync: opts.NoSync, FreelistType: bolt.FreelistMapType})
}

// checkFile refuses an existing file that cannot be a whole bbolt file: too
// short for its meta pages, or shorter than the size its newest valid meta
// page records (a truncated copy). An empty or missing file is fine (a new
// one is created).
func checkFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open state file %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open state file %s: %w", path, err)
	}
	if st.Size() == 0 {
		return nil
	}
	// The two meta pages start at offset 0 and at pageSize; read the first
	// page's header to learn pageSize.
	head := make([]byte, 4096)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("read state file %s: %w", path, err)
	}
	head = head[:n]
	m0, ok0 := parseMeta(head)
	pageSize := int64(4096)
	if ok0 {
		pageSize = int64(m0.pageSize)
	}
	second := make([]byte, 128)
	var m1 meta
	ok1 := false
	if n, err := f.ReadAt(second, pageSize); err == nil || n == len(second) {
		m1, ok1 = parseMeta(second)
	}
	var best meta
	switch {
	case ok0 && ok1 && m1.txid > m0.txid:
		best = m1
	case ok0:
		best = m0
	case ok1:
		best = m1
	default:
		return damaged(path, errors.New("no valid bbolt meta page (not a portbridge state file, or overwritten)"))
	}
	if need := int64(best.pgid) * int64(best.pageSize); st.Size() < need {
		return damaged(path, fmt.Errorf("truncated: %d bytes, but its last transaction needs %d", st.Size(), need))
	}
	return nil
}

type meta struct {
	pageSize uint32
	pgid     uint64
	txid     uint64
}

// parseMeta reads a bbolt meta page (page header of 16 bytes, then magic,
// version, page size, flags, root bucket, freelist, high-water page id,
// transaction id and an FNV-64a checksum of what precedes it).
func parseMeta(p []byte) (meta, bool) {
	const hdr = 16
	if len(p) < hdr+64 {
		return meta{}, false
	}
	m := p[hdr:]
	if binary.LittleEndian.Uint32(m[0:]) != 0xED0CDAED || binary.LittleEndian.Uint32(m[4:]) != 2 {
		return meta{}, false
	}
	h := fnv.New64a()
	_, _ = h.Write(m[:56])
	if h.Sum64() != binary.LittleEndian.Uint64(m[56:]) {
		return meta{}, false
	}
	ps := binary.LittleEndian.Uint32(m[8:])
	if ps < 512 || ps > 1<<20 {
		return meta{}, false
	}
	return meta{pageSize: ps, pgid: binary.LittleEndian.Uint64(m[40:]), txid: binary.LittleEndian.Uint64(m[48:])}, true
}

func (s *Store) init() error {
	return s.update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		ver := uint64(0)
		if v := meta.Get(keySchema); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("%w: meta key %q has %d bytes", ErrDamaged, keySchema, len(v))
			}
			ver = binary.BigEndian.Uint64(v)
		}
		if ver > SchemaVersion {
			return fmt.Errorf("schema version %d was written by a newer portbridge (this one reads up to %d); move the file away to start over", ver, SchemaVersion)
		}
		for _, b := range [][]byte{bucketQueue, bucketRefs, bucketClaims, bucketParked, bucketQuarantine} {
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
// layout change adds a step; version 0 is a new, empty file.
func migrate(tx *bolt.Tx, from uint64) error {
	switch from {
	case 0, SchemaVersion:
		return nil
	case 1:
		return migrateV1(tx)
	default:
		return fmt.Errorf("no migration from schema version %d", from)
	}
}

// view and update run a transaction with bbolt's panics on a corrupt page
// (and memory faults) turned into an error naming the file.
func (s *Store) view(fn func(*bolt.Tx) error) error   { return s.guarded(s.db.View, fn) }
func (s *Store) update(fn func(*bolt.Tx) error) error { return s.guarded(s.db.Update, fn) }

func (s *Store) guarded(run func(func(*bolt.Tx) error) error, fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("state file %s: %w: %v", s.path, ErrDamaged, r)
		}
	}()
	return run(fn)
}

// Path returns the file's path.
func (s *Store) Path() string { return s.path }

// Close releases the file and its lock.
func (s *Store) Close() error { return s.db.Close() }

// ErrFileGone and ErrFileReplaced are returned (wrapped) by CheckFile.
var (
	ErrFileGone     = errors.New("state file was deleted")
	ErrFileReplaced = errors.New("state file was replaced by another file")
)

// CheckFile reports whether the path still names the file this Store has
// open. A file deleted or replaced underneath makes every later write go
// to a file nobody will read again: stop acknowledging then.
func (s *Store) CheckFile() error {
	st, err := os.Stat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w while the sidecar was running", s.path, ErrFileGone)
	}
	if err != nil {
		return fmt.Errorf("check state file %s: %w", s.path, err)
	}
	if !os.SameFile(st, s.id) {
		return fmt.Errorf("%s: %w while the sidecar was running", s.path, ErrFileReplaced)
	}
	return nil
}

// Size returns the size of the file in bytes.
func (s *Store) Size() (int64, error) {
	st, err := os.Stat(s.path)
	if err != nil {
		return 0, fmt.Errorf("stat state file %s: %w", s.path, err)
	}
	return st.Size(), nil
}

// GetMeta reads a bookkeeping value; nil when absent.
func (s *Store) GetMeta(key string) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get([]byte(key)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// PutMeta writes a bookkeeping value; nil deletes it.
func (s *Store) PutMeta(key string, value []byte) error {
	if key == string(keySchema) || len(key) > 0 && key[0] == reservedMetaPrefix {
		return fmt.Errorf("meta key %q is reserved", key)
	}
	return s.update(func(tx *bolt.Tx) error {
		if value == nil {
			return tx.Bucket(bucketMeta).Delete([]byte(key))
		}
		return tx.Bucket(bucketMeta).Put([]byte(key), value)
	})
}

// reservedMetaPrefix starts the meta keys the store maintains itself
// (owned counts, the snapshot flag).
const reservedMetaPrefix = '~'
