package main

import (
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// stateBreakdown opens the (closed) bbolt state file read-only and says
// where its bytes go: per top-level bucket the keys, the bytes of pages
// allocated and the bytes of data in them, and the free pages.
func stateBreakdown(path string) (string, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return "", fmt.Errorf("open the state file %s read-only: %w", path, err)
	}
	defer db.Close()
	var parts []string
	var size, allocated int64
	err = db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		parts = append(parts, fmt.Sprintf("file %s, page size %d B", mb(size), db.Info().PageSize))
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
	parts = append(parts, fmt.Sprintf("%s in no bucket's pages (free pages, freelist, meta pages, growth preallocation)", mb(size-allocated)))
	return strings.Join(parts, "; "), nil
}
