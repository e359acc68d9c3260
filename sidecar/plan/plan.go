// Package plan decides what a sync does: from the Port entities the mapping
// wants (desired) and the ownership records of the registry (owned), it
// computes a Changes value — create, update (with the changed fields),
// delete, release, unchanged and conflicts — without any I/O. Policies and
// the deletion guard are filters over a Changes value; refused and
// suppressed changes are kept in the value so callers can log and count
// them.
//
// The shape is external-dns's: source → plan → policy → registry → provider.
// Everything here is pure and deterministic, so it is tested with tables.
package plan

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Key names a Port entity: its blueprint and identifier.
type Key struct {
	Blueprint  string
	Identifier string
}

func (k Key) String() string { return k.Blueprint + "/" + k.Identifier }

// Compare orders keys by blueprint, then identifier.
func (k Key) Compare(o Key) int {
	if c := strings.Compare(k.Blueprint, o.Blueprint); c != 0 {
		return c
	}
	return strings.Compare(k.Identifier, o.Identifier)
}

// Desired is a Port entity the mapping produced for a Backstage ref.
type Desired struct {
	Key
	// Hash identifies the mapped content (never 0 for real content).
	Hash uint64
	// Entity is what the provider sends; opaque to the plan.
	Entity any
}

// Owned is one ownership record: a Port entity that a ref produced. Hash is
// the hash Port last confirmed for this ref, or 0 when the ref claims the
// entity without having written it (it lost a conflict).
type Owned struct {
	Key
	Ref      string
	Hash     uint64
	PushedAt time.Time
}

// Ref is one Backstage entity in a plan: what its mapping wants now and what
// it owns.
type Ref struct {
	Ref  string
	Kind string
	// ObservedAt is the observation the plan applies; the registry records
	// it so that an older observation never overwrites a newer one.
	ObservedAt time.Time
	// Desired are the mapping's outputs for the entity now.
	Desired []Desired
	// Owned are the ref's ownership records.
	Owned []Owned
	// Partial is set when the mapping failed for some resource of the
	// entity: what it produced before and does not produce now may still be
	// wanted, so nothing of it is deleted.
	Partial bool
	// Gone is set when the entity no longer exists in the catalog: all it
	// owns goes, and so does its record.
	Gone bool
	// Record asks for the observation to be recorded even when nothing
	// changes (the change path; a new entity). Otherwise it is recorded
	// only with a change, so an unchanged resync writes nothing.
	Record bool
	// Version identifies the entity's content and the mapping (its etag
	// and the mapping's fingerprint; 0 unknown), and OwnedVersion the one
	// the registry has: a new version is recorded once the ref's changes
	// are applied, so that a later resync can skip the unchanged entity.
	Version, OwnedVersion uint64
}

// StaleMode says what happens to owned entities a ref no longer produces.
type StaleMode int

const (
	// StaleDelete deletes them now (change path, end of a resync).
	StaleDelete StaleMode = iota
	// StaleDefer leaves them to a later plan (pages of a resync: the
	// deletion is decided once the whole catalog was read).
	StaleDefer
)

// Input is everything Compute needs.
type Input struct {
	Refs []Ref
	// Others maps a key to the ownership records of refs outside Refs that
	// claim it and still want it (the caller looks them up in the
	// registry). Refs in Refs are taken into account by Compute itself.
	Others map[Key][]Owned
	Stale  StaleMode
}

// Action is what a Change does.
type Action string

// The actions.
const (
	Create  Action = "create"
	Update  Action = "update"
	Delete  Action = "delete"
	Release Action = "release" // drop the ref's claim; another ref keeps the entity
	Claim   Action = "claim"   // record a claim without writing: another ref wins the entity
)

// FieldChange is one changed field of an update, old → new (nil when
// absent).
type FieldChange struct {
	Path string
	Old  any
	New  any
}

// Change is one planned change of one Port entity on behalf of one ref.
type Change struct {
	Action Action
	Key
	Ref  string
	Kind string
	// Hash is the new content's hash (create, update, claim: 0).
	Hash uint64
	// OldHash is what the ref last wrote (update, delete, release).
	OldHash uint64
	// Entity is the content to send (create, update).
	Entity any
	// Reason says why, for people.
	Reason string
	// Fields are the changed fields of an update, when the caller computed
	// them (dry run, logs).
	Fields []FieldChange
}

// Conflict is a Port entity that several Backstage refs map to. The first
// ref in sort order wins: it writes the entity; the others only claim it, so
// the entity stays while any of them still maps to it.
type Conflict struct {
	Key
	Refs   []string // sorted; Refs[0] is the winner
	Winner string
}

// Changes is a plan: what to write, what to delete, and what was held back.
type Changes struct {
	Create  []Change
	Update  []Change
	Delete  []Change
	Release []Change
	Claim   []Change
	// Unchanged counts desired entities whose content Port already has,
	// per Backstage kind, and UnchangedByBlueprint per blueprint.
	Unchanged            map[string]int
	UnchangedByBlueprint map[string]int
	Conflicts            []Conflict

	// Suppressed by the policy (external-dns keeps them for the same
	// reason: every refused change is visible).
	SuppressedUpdates []Change
	SuppressedDeletes []Change
	Policy            string

	// RefusedDeletes were held back by the guard, for Refusal.
	RefusedDeletes []Change
	Refusal        *Refusal

	// Observed are refs whose observation time the registry records.
	Observed map[string]time.Time
	// Versions are refs' new content versions (see Ref.Version), recorded
	// once their changes are applied.
	Versions map[string]uint64
	// Forget are refs whose record goes once nothing of them is left.
	Forget []string
	// Handover are refs that still claim an entity another ref released:
	// they should be mapped and written again soon, so the entity carries
	// their content.
	Handover []string
}

// Empty reports whether c writes nothing and records nothing.
func (c *Changes) Empty() bool {
	return c == nil || len(c.Create)+len(c.Update)+len(c.Delete)+len(c.Release)+len(c.Claim)+len(c.Observed)+len(c.Versions)+len(c.Forget) == 0
}

// size counts the changes that touch the registry.
func (c *Changes) size() int {
	return len(c.Create) + len(c.Update) + len(c.Delete) + len(c.Release) + len(c.Claim)
}

// Writes returns creates and updates.
func (c *Changes) Writes() []Change {
	return append(slices.Clone(c.Create), c.Update...)
}

// UnchangedTotal is the number of unchanged entities over all kinds.
func (c *Changes) UnchangedTotal() int {
	n := 0
	for _, v := range c.Unchanged {
		n += v
	}
	return n
}

// Merge appends o's changes to c (for a plan built in parts, such as the
// pages of a resync printed as one plan).
func (c *Changes) Merge(o *Changes) {
	if o == nil {
		return
	}
	c.Create = append(c.Create, o.Create...)
	c.Update = append(c.Update, o.Update...)
	c.Delete = append(c.Delete, o.Delete...)
	c.Release = append(c.Release, o.Release...)
	c.Claim = append(c.Claim, o.Claim...)
	c.Conflicts = append(c.Conflicts, o.Conflicts...)
	c.SuppressedUpdates = append(c.SuppressedUpdates, o.SuppressedUpdates...)
	c.SuppressedDeletes = append(c.SuppressedDeletes, o.SuppressedDeletes...)
	c.RefusedDeletes = append(c.RefusedDeletes, o.RefusedDeletes...)
	if o.Refusal != nil {
		c.Refusal = o.Refusal
	}
	if o.Policy != "" {
		c.Policy = o.Policy
	}
	for k, v := range o.Unchanged {
		if c.Unchanged == nil {
			c.Unchanged = map[string]int{}
		}
		c.Unchanged[k] += v
	}
	for k, v := range o.UnchangedByBlueprint {
		if c.UnchangedByBlueprint == nil {
			c.UnchangedByBlueprint = map[string]int{}
		}
		c.UnchangedByBlueprint[k] += v
	}
	for r, t := range o.Observed {
		if c.Observed == nil {
			c.Observed = map[string]time.Time{}
		}
		c.Observed[r] = t
	}
	for r, v := range o.Versions {
		if c.Versions == nil {
			c.Versions = map[string]uint64{}
		}
		c.Versions[r] = v
	}
	c.Forget = append(c.Forget, o.Forget...)
	c.Handover = append(c.Handover, o.Handover...)
}

// Compute plans in: per ref, each desired entity is created, updated, left
// alone (unchanged) or only claimed (another ref wins it); each owned entity
// the ref no longer produces is deleted, released (another ref still wants
// it) or left for later (StaleDefer, or a partial mapping).
func Compute(in Input) *Changes {
	ch := &Changes{Unchanged: map[string]int{}, UnchangedByBlueprint: map[string]int{}, Observed: map[string]time.Time{}}

	// Who wants each key in this plan, besides the owners outside it.
	wanted := map[Key][]string{}
	for _, r := range in.Refs {
		if r.Gone {
			continue
		}
		for _, d := range r.Desired {
			if !slices.Contains(wanted[d.Key], r.Ref) {
				wanted[d.Key] = append(wanted[d.Key], r.Ref)
			}
		}
	}
	claimants := func(k Key) []string {
		refs := slices.Clone(wanted[k])
		for _, o := range in.Others[k] {
			if !slices.Contains(refs, o.Ref) {
				refs = append(refs, o.Ref)
			}
		}
		slices.Sort(refs)
		return refs
	}
	reported := map[Key]bool{}

	for _, r := range in.Refs {
		owned := make(map[Key]Owned, len(r.Owned))
		for _, o := range r.Owned {
			owned[o.Key] = o
		}
		before := ch.size()
		versioned := r.Version != 0 && r.Version != r.OwnedVersion && !r.Gone && !r.Partial
		if versioned {
			if ch.Versions == nil {
				ch.Versions = map[string]uint64{}
			}
			ch.Versions[r.Ref] = r.Version
		}
		// The observation is recorded with any change, and when asked.
		record := func() bool { return !r.Gone && (r.Record || versioned || ch.size() > before) }
		produced := map[Key]bool{}
		for _, d := range r.Desired {
			if r.Gone || produced[d.Key] {
				continue // a mapping that yields one key twice writes it once
			}
			produced[d.Key] = true
			old, had := owned[d.Key]
			refs := claimants(d.Key)
			if len(refs) > 1 {
				if !reported[d.Key] {
					reported[d.Key] = true
					ch.Conflicts = append(ch.Conflicts, Conflict{Key: d.Key, Refs: refs, Winner: refs[0]})
				}
				if refs[0] == r.Ref {
					// Refs outside the plan that wrote it before lose it now.
					for _, o := range in.Others[d.Key] {
						if o.Ref != r.Ref && o.Hash != 0 {
							ch.Claim = append(ch.Claim, Change{Action: Claim, Key: d.Key, Ref: o.Ref, Kind: kindOf(o.Ref), OldHash: o.Hash,
								Reason: "also produced by " + r.Ref + ", which wins"})
						}
					}
				} else {
					if !had || old.Hash != 0 {
						ch.Claim = append(ch.Claim, Change{Action: Claim, Key: d.Key, Ref: r.Ref, Kind: r.Kind, OldHash: old.Hash,
							Reason: "also produced by " + refs[0] + ", which wins"})
					}
					continue
				}
			}
			c := Change{Key: d.Key, Ref: r.Ref, Kind: r.Kind, Hash: d.Hash, OldHash: old.Hash, Entity: d.Entity}
			switch {
			case had && old.Hash == d.Hash:
				ch.Unchanged[r.Kind]++
				ch.UnchangedByBlueprint[d.Blueprint]++
				continue
			case had && old.Hash == 0:
				c.Action, c.Reason = Update, "takes over an entity it only claimed"
				ch.Update = append(ch.Update, c)
			case had:
				c.Action, c.Reason = Update, "mapped output changed"
				ch.Update = append(ch.Update, c)
			case len(refs) > 1:
				c.Action, c.Reason = Update, "wins an entity other refs also produce"
				ch.Update = append(ch.Update, c)
			default:
				c.Action, c.Reason = Create, "not in the registry"
				ch.Create = append(ch.Create, c)
			}
		}
		// What the ref owns and no longer produces.
		if (r.Partial || in.Stale == StaleDefer) && !r.Gone {
			if record() {
				ch.Observed[r.Ref] = r.ObservedAt
			}
			continue
		}
		left := 0
		for _, o := range r.Owned {
			if produced[o.Key] {
				left++
				continue
			}
			c := Change{Key: o.Key, Ref: r.Ref, Kind: r.Kind, OldHash: o.Hash}
			others := slices.DeleteFunc(claimants(o.Key), func(x string) bool { return x == r.Ref })
			if len(others) > 0 {
				c.Action, c.Reason = Release, "still produced by "+others[0]
				ch.Release = append(ch.Release, c)
				// The remaining claimants may never have written it.
				ch.Handover = appendUnique(ch.Handover, others[0])
				continue
			}
			c.Action = Delete
			if r.Gone {
				c.Reason = "not in the catalog"
			} else {
				c.Reason = "no longer produced by its entity's mapping"
			}
			ch.Delete = append(ch.Delete, c)
		}
		if r.Gone && left == 0 {
			ch.Forget = append(ch.Forget, r.Ref)
		}
		if record() {
			ch.Observed[r.Ref] = r.ObservedAt
		}
	}
	ch.sort()
	return ch
}

// kindOf is the kind part of a canonical ref ("component" of
// "component:default/x").
func kindOf(ref string) string {
	if i := strings.IndexByte(ref, ':'); i > 0 {
		return ref[:i]
	}
	return ""
}

func appendUnique(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// sort makes a plan deterministic: by key, then ref.
func (c *Changes) sort() {
	byKey := func(a, b Change) int {
		if d := a.Key.Compare(b.Key); d != 0 {
			return d
		}
		return strings.Compare(a.Ref, b.Ref)
	}
	for _, l := range [][]Change{c.Create, c.Update, c.Delete, c.Release, c.Claim} {
		slices.SortFunc(l, byKey)
	}
	slices.SortFunc(c.Conflicts, func(a, b Conflict) int { return a.Key.Compare(b.Key) })
	slices.Sort(c.Forget)
	slices.Sort(c.Handover)
}

// CountBy counts changes per blueprint.
func CountBy(changes []Change) map[string]int {
	out := map[string]int{}
	for _, c := range changes {
		out[c.Blueprint]++
	}
	return out
}

// SortedKeys returns m's keys in order.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp.Compare[string])
	return keys
}
