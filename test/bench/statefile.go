package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// stateBreakdown opens the (closed) bbolt state file read-only and says
// where its bytes go: per top-level bucket the keys, the bytes of pages
// allocated and the bytes of data in them, the rest below bbolt's
// high-water mark, and the file's growth preallocation beyond it.
func stateBreakdown(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("stat the state file: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return "", fmt.Errorf("open the state file %s read-only: %w", path, err)
	}
	defer db.Close()
	var parts []string
	var size, allocated int64
	err = db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		parts = append(parts, fmt.Sprintf("file %s, of which %s up to bbolt's high-water mark (page size %d B)", mb(fi.Size()), mb(size), db.Info().PageSize))
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			s := b.Stats()
			allocated += int64(s.BranchAlloc + s.LeafAlloc)
			parts = append(parts, fmt.Sprintf("bucket %q: %s keys, %s in pages holding %s of data", name, count(s.KeyN),
				mb(int64(s.BranchAlloc+s.LeafAlloc)), mb(int64(s.BranchInuse+s.LeafInuse))))
			return nil
		})
	})
	if err != nil {
		return "", fmt.Errorf("read the state file %s: %w", path, err)
	}
	parts = append(parts, fmt.Sprintf("%s of free, freelist and meta pages below the high-water mark", mb(size-allocated)),
		fmt.Sprintf("%s preallocated beyond it (bbolt grows the file in steps)", mb(fi.Size()-size)))
	return strings.Join(parts, "; "), nil
}
