package engine

import (
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/portbridge/portbridge/sidecar/plan"
)

// seenSet remembers which (ref, Port key) pairs a resync's mapping
// produced, and which refs it read, as 64-bit hashes in one slice: 8 bytes
// an entry (a map would take 40), sorted once at the end of the scan and
// searched then. A collision can only make a pair look seen, which keeps an
// entity that should have been deleted (until the next resync), never
// deletes one that should stay.
type seenSet struct {
	mu     sync.Mutex
	hashes []uint64
	sorted bool
}

func pairHash(ref string, k plan.Key) uint64 {
	d := xxhash.New()
	_, _ = d.WriteString(ref)
	_, _ = d.Write([]byte{0})
	_, _ = d.WriteString(k.Blueprint)
	_, _ = d.Write([]byte{0})
	_, _ = d.WriteString(k.Identifier)
	return d.Sum64()
}

// add records that ref was read and produced keys.
func (s *seenSet) add(ref string, keys []plan.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hashes = append(s.hashes, pairHash(ref, plan.Key{}))
	for _, k := range keys {
		s.hashes = append(s.hashes, pairHash(ref, k))
	}
	s.sorted = false
}

// freeze sorts the set; has may be called after it.
func (s *seenSet) freeze() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sorted {
		slices.Sort(s.hashes)
		s.hashes = slices.Compact(s.hashes)
		s.sorted = true
	}
}

// has reports whether ref produced k in the scan (k zero: whether ref was
// read at all).
func (s *seenSet) has(ref string, k plan.Key) bool {
	_, ok := slices.BinarySearch(s.hashes, pairHash(ref, k))
	return ok
}
