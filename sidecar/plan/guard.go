package plan

import (
	"fmt"
	"math"
)

// DefaultDeletionThreshold is Port's default entityDeletionThreshold.
const DefaultDeletionThreshold = 0.9

// DefaultMinBlueprintOwned is the smallest number of owned entities of one
// blueprint for which the per-blueprint share is checked: deleting 2 of 3
// domains is normal, deleting 900 of 1,000 components is not.
const DefaultMinBlueprintOwned = 10

// RefusalReason classifies why the guard held deletions back.
type RefusalReason string

// The reasons.
const (
	RefusedIncompleteScan RefusalReason = "incomplete_scan"
	RefusedThreshold      RefusalReason = "threshold"
	RefusedDisabled       RefusalReason = "disabled"
	// RefusedOwnershipUnknown: the state file lost its ownership records and
	// they could not be rebuilt from Port yet.
	RefusedOwnershipUnknown RefusalReason = "ownership_unknown"
)

// Refusal says why the guard held deletions back, with the numbers.
type Refusal struct {
	Reason  RefusalReason
	Message string
	// Planned counts the deletions the check weighed (this plan's plus the
	// recent ones of its window); Owned the owned entities it weighed them
	// against; Blueprint is set when one blueprint's share tripped it.
	Planned, Owned int
	Blueprint      string
}

// Guard is the one check every deletion passes, on every path: nothing is
// deleted after an incomplete catalog scan, and no plan deletes more than
// Threshold of the owned entities (overall, and per blueprint that owns at
// least MinBlueprintOwned). Threshold 0 means no deletion is ever allowed;
// 1 means no share limit.
type Guard struct {
	Threshold         float64
	MinBlueprintOwned int
}

// ScanProof is what a resync knows about its catalog scan.
type ScanProof struct {
	// Err is set when a page failed (after retries).
	Err string
	// Seen is how many entities the scan read.
	Seen int
	// Total is the catalog's totalItems (from the last page); -1 unknown.
	Total int
	// Tolerance is how many changes were observed while the scan ran
	// (notifications received): the catalog may legitimately have grown or
	// shrunk by that much between its count and our reading.
	Tolerance int
}

// Complete reports whether the scan proved it read the whole catalog, and
// if not, why.
func (p ScanProof) Complete() (bool, string) {
	switch {
	case p.Err != "":
		return false, "a catalog page failed: " + p.Err
	case p.Total < 0:
		return false, "the catalog did not report totalItems, so completeness cannot be proven"
	case int(math.Abs(float64(p.Seen-p.Total))) > p.Tolerance:
		return false, fmt.Sprintf("read %d entities but the catalog reports totalItems %d (%d changes observed during the scan); a page without a cursor or a short page ended it early",
			p.Seen, p.Total, p.Tolerance)
	}
	return true, ""
}

// Scope is what the guard weighs a plan's deletions against.
type Scope struct {
	// Path is "resync" or "change", for messages.
	Path string
	// Owned counts owned entities per blueprint.
	Owned map[string]int
	// Recent counts deletions already weighed in the window, per blueprint
	// (the change path, where deletions arrive one entity at a time).
	Recent map[string]int
	// Pending counts deletions announced but not planned yet (queued
	// notifications of other entities): weighed in the overall share, so a
	// burst of deletions is judged as a whole before any of it happens.
	Pending int
	// Scan is the resync's proof of a complete scan; nil on the change
	// path.
	Scan *ScanProof
	// OwnershipUnknown, when set, says why what the sidecar owns is not
	// known (the state file lost it and Port's data-source listing could
	// not rebuild it yet): every deletion is refused.
	OwnershipUnknown string
}

// Check moves c's deletions to RefusedDeletes when they may not happen and
// says why in c.Refusal. Releases are never refused: they delete nothing.
func (g Guard) Check(c *Changes, s Scope) *Changes {
	if len(c.Delete) == 0 {
		return c
	}
	if r := g.refuse(c, s); r != nil {
		c.Refusal = r
		c.RefusedDeletes = append(c.RefusedDeletes, c.Delete...)
		c.Delete = nil
		c.Forget = keepForgettable(c)
	}
	return c
}

func (g Guard) refuse(c *Changes, s Scope) *Refusal {
	planned := CountBy(c.Delete)
	total, owned := 0, 0
	for bp, n := range planned {
		total += n + s.Recent[bp]
	}
	for bp, n := range s.Recent {
		if _, ok := planned[bp]; !ok {
			total += n
		}
	}
	total += s.Pending
	for _, n := range s.Owned {
		owned += n
	}
	if s.Scan != nil {
		if ok, why := s.Scan.Complete(); !ok {
			return &Refusal{Reason: RefusedIncompleteScan, Planned: total, Owned: owned,
				Message: fmt.Sprintf("not deleting %d entities: the catalog scan is incomplete: %s", len(c.Delete), why)}
		}
	}
	if s.OwnershipUnknown != "" {
		return &Refusal{Reason: RefusedOwnershipUnknown, Planned: total, Owned: owned,
			Message: fmt.Sprintf("not deleting %d entities: ownership is not known: %s", len(c.Delete), s.OwnershipUnknown)}
	}
	if g.Threshold <= 0 {
		return &Refusal{Reason: RefusedDisabled, Planned: total, Owned: owned,
			Message: fmt.Sprintf("not deleting %d entities: entityDeletionThreshold is 0, which disables deletion", len(c.Delete))}
	}
	if owned > 0 && share(total, owned) > g.Threshold {
		return &Refusal{Reason: RefusedThreshold, Planned: total, Owned: owned,
			Message: fmt.Sprintf("refusing to delete %d of %d owned entities (%.0f%%%s): more than entityDeletionThreshold %.0f%%; check the catalog first",
				total, owned, share(total, owned)*100, windowNote(s), g.Threshold*100)}
	}
	min := g.MinBlueprintOwned
	if min <= 0 {
		min = DefaultMinBlueprintOwned
	}
	for _, bp := range SortedKeys(planned) {
		n, o := planned[bp]+s.Recent[bp], s.Owned[bp]
		if o >= min && share(n, o) > g.Threshold {
			return &Refusal{Reason: RefusedThreshold, Planned: n, Owned: o, Blueprint: bp,
				Message: fmt.Sprintf("refusing to delete %d of %d owned entities of blueprint %s (%.0f%%%s): more than entityDeletionThreshold %.0f%%; check the catalog first",
					n, o, bp, share(n, o)*100, windowNote(s), g.Threshold*100)}
		}
	}
	return nil
}

func windowNote(s Scope) string {
	if len(s.Recent) > 0 || s.Pending > 0 {
		return ", counting the deletions of the current window"
	}
	return ""
}

func share(n, of int) float64 {
	if of <= 0 {
		return 0
	}
	return float64(n) / float64(of)
}
