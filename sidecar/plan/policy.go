package plan

import "fmt"

// Policy limits what a plan may do, as external-dns's policies do: it takes
// a plan and returns it with what it forbids moved to the suppressed lists,
// never silently dropped.
type Policy interface {
	Name() string
	Apply(*Changes) *Changes
}

// The policy names, as config spells them.
const (
	PolicySync       = "sync"        // create, update and delete
	PolicyUpsertOnly = "upsert-only" // create and update, never delete
	PolicyCreateOnly = "create-only" // create only: never update or delete
)

// PolicyFor returns the policy called name ("" is sync).
func PolicyFor(name string) (Policy, error) {
	switch name {
	case "", PolicySync:
		return SyncPolicy{}, nil
	case PolicyUpsertOnly:
		return UpsertOnlyPolicy{}, nil
	case PolicyCreateOnly:
		return CreateOnlyPolicy{}, nil
	default:
		return nil, fmt.Errorf("unknown policy %q (want %s, %s or %s)", name, PolicySync, PolicyUpsertOnly, PolicyCreateOnly)
	}
}

// SyncPolicy allows everything.
type SyncPolicy struct{}

// Name implements Policy.
func (SyncPolicy) Name() string { return PolicySync }

// Apply implements Policy.
func (SyncPolicy) Apply(c *Changes) *Changes {
	c.Policy = PolicySync
	return c
}

// UpsertOnlyPolicy never deletes: deletions are suppressed and the entities
// stay owned.
type UpsertOnlyPolicy struct{}

// Name implements Policy.
func (UpsertOnlyPolicy) Name() string { return PolicyUpsertOnly }

// Apply implements Policy.
func (UpsertOnlyPolicy) Apply(c *Changes) *Changes {
	c.Policy = PolicyUpsertOnly
	c.SuppressedDeletes = append(c.SuppressedDeletes, c.Delete...)
	c.Delete = nil
	c.Forget = keepForgettable(c)
	return c
}

// CreateOnlyPolicy only creates: updates and deletions are suppressed.
type CreateOnlyPolicy struct{}

// Name implements Policy.
func (CreateOnlyPolicy) Name() string { return PolicyCreateOnly }

// Apply implements Policy.
func (CreateOnlyPolicy) Apply(c *Changes) *Changes {
	c.Policy = PolicyCreateOnly
	c.SuppressedUpdates = append(c.SuppressedUpdates, c.Update...)
	c.Update = nil
	c.SuppressedDeletes = append(c.SuppressedDeletes, c.Delete...)
	c.Delete = nil
	c.Forget = keepForgettable(c)
	return c
}

// keepForgettable drops from c.Forget the refs that still own something the
// plan no longer deletes: their record must stay, or the entity would be
// owned by nobody.
func keepForgettable(c *Changes) []string {
	held := map[string]bool{}
	for _, l := range [][]Change{c.SuppressedDeletes, c.RefusedDeletes} {
		for _, x := range l {
			held[x.Ref] = true
		}
	}
	var out []string
	for _, r := range c.Forget {
		if !held[r] {
			out = append(out, r)
		}
	}
	return out
}
