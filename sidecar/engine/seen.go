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

// allKey marks a ref whose recorded outputs all count as seen (a
// two-phase scan found it unchanged): one entry instead of one per output.
var allKey = plan.Key{Blueprint: "\x00all"}

// addAll records that ref was read and still produces everything its
// record holds.
func (s *seenSet) addAll(ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hashes = append(s.hashes, pairHash(ref, allKey))
	s.sorted = false
}

// hasAll reports whether addAll recorded ref.
func (s *seenSet) hasAll(ref string) bool { return s.has(ref, allKey) }

// grow makes room for n more entries at once (a scan that knows the
// catalog's size), so the set is not copied as it grows.
func (s *seenSet) grow(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hashes = slices.Grow(s.hashes, n)
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
