package plan

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func key(id string) Key                  { return Key{Blueprint: "component", Identifier: id} }
func want(id string, h uint64) Desired   { return Desired{Key: key(id), Hash: h} }
func own(ref, id string, h uint64) Owned { return Owned{Key: key(id), Ref: ref, Hash: h, PushedAt: t0} }
func ref(name string, d []Desired, o []Owned) Ref {
	return Ref{Ref: "component:default/" + name, Kind: "component", ObservedAt: t0, Desired: d, Owned: o}
}

// summary renders a plan compactly for table comparisons.
func summary(c *Changes) string {
	var b strings.Builder
	for _, l := range [][]Change{c.Create, c.Update, c.Delete, c.Release, c.Claim, c.SuppressedUpdates, c.SuppressedDeletes, c.RefusedDeletes} {
		for _, x := range l {
			b.WriteString(string(x.Action) + ":" + x.Identifier + "@" + strings.TrimPrefix(x.Ref, "component:default/") + " ")
		}
	}
	for _, x := range c.Conflicts {
		b.WriteString("conflict:" + x.Identifier + "=" + strings.Join(x.Refs, "|") + " ")
	}
	for _, r := range c.Forget {
		b.WriteString("forget:" + strings.TrimPrefix(r, "component:default/") + " ")
	}
	for _, r := range c.Handover {
		b.WriteString("handover:" + strings.TrimPrefix(r, "component:default/") + " ")
	}
	if n := c.UnchangedTotal(); n > 0 {
		b.WriteString("unchanged:" + string(rune('0'+n)) + " ")
	}
	return strings.TrimSpace(b.String())
}

func TestCompute(t *testing.T) {
	const a, b = "component:default/a", "component:default/b"
	tests := []struct {
		name string
		in   Input
		want string
	}{
		{"a new entity is created",
			Input{Refs: []Ref{ref("a", []Desired{want("x", 1)}, nil)}},
			"create:x@a"},
		{"equal hashes are unchanged",
			Input{Refs: []Ref{ref("a", []Desired{want("x", 1)}, []Owned{own(a, "x", 1)})}},
			"unchanged:1"},
		{"a different hash is an update",
			Input{Refs: []Ref{ref("a", []Desired{want("x", 2)}, []Owned{own(a, "x", 1)})}},
			"update:x@a"},
		{"an output no longer produced is deleted on the change path",
			Input{Refs: []Ref{ref("a", []Desired{want("y", 1)}, []Owned{own(a, "x", 1)})}},
			"create:y@a delete:x@a"},
		{"an output no longer produced waits when stale outputs are deferred",
			Input{Refs: []Ref{ref("a", []Desired{want("y", 1)}, []Owned{own(a, "x", 1)})}, Stale: StaleDefer},
			"create:y@a"},
		{"a partial mapping deletes nothing",
			Input{Refs: []Ref{func() Ref { r := ref("a", nil, []Owned{own(a, "x", 1)}); r.Partial = true; return r }()}},
			""},
		{"a gone entity deletes what it owns and is forgotten",
			Input{Refs: []Ref{func() Ref {
				r := ref("a", []Desired{want("x", 1)}, []Owned{own(a, "x", 1), own(a, "y", 1)})
				r.Gone = true
				return r
			}()}},
			"delete:x@a delete:y@a forget:a"},
		{"a gone entity that owns nothing is forgotten and deletes nothing",
			Input{Refs: []Ref{func() Ref { r := ref("a", nil, nil); r.Gone = true; return r }()}},
			"forget:a"},
		{"never deletes what the ref does not own, even when another ref owns it",
			Input{Refs: []Ref{func() Ref { r := ref("a", nil, nil); r.Gone = true; return r }()}, Others: map[Key][]Owned{key("x"): {own(b, "x", 1)}}},
			"forget:a"},
		{"two refs producing one key: the first in order writes, the other claims",
			Input{Refs: []Ref{ref("b", []Desired{want("x", 2)}, nil), ref("a", []Desired{want("x", 1)}, nil)}},
			"update:x@a claim:x@b conflict:x=component:default/a|component:default/b"},
		{"a ref outside the plan that wrote the key loses it to a smaller ref",
			Input{Refs: []Ref{ref("a", []Desired{want("x", 1)}, nil)}, Others: map[Key][]Owned{key("x"): {own(b, "x", 9)}}},
			"update:x@a claim:x@b conflict:x=component:default/a|component:default/b"},
		{"a larger ref only claims a key a smaller ref outside the plan owns",
			Input{Refs: []Ref{ref("b", []Desired{want("x", 2)}, nil)}, Others: map[Key][]Owned{key("x"): {own(a, "x", 1)}}},
			"claim:x@b conflict:x=component:default/a|component:default/b"},
		{"a claim already recorded is not recorded again",
			Input{Refs: []Ref{ref("b", []Desired{want("x", 2)}, []Owned{own(b, "x", 0)})}, Others: map[Key][]Owned{key("x"): {own(a, "x", 1)}}},
			"conflict:x=component:default/a|component:default/b"},
		{"a gone ref releases a shared key instead of deleting it, and hands it over",
			Input{Refs: []Ref{func() Ref { r := ref("a", nil, []Owned{own(a, "x", 1)}); r.Gone = true; return r }()}, Others: map[Key][]Owned{key("x"): {own(b, "x", 0)}}},
			"release:x@a forget:a handover:b"},
		{"a claimant that took over only by claim writes its content",
			Input{Refs: []Ref{ref("b", []Desired{want("x", 2)}, []Owned{own(b, "x", 0)})}},
			"update:x@b"},
		{"one key yielded twice by one ref is written once",
			Input{Refs: []Ref{ref("a", []Desired{want("x", 1), want("x", 1)}, nil)}},
			"create:x@a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summary(Compute(tt.in))
			if got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestComputeRecordsObservations(t *testing.T) {
	gone := ref("b", nil, nil)
	gone.Gone = true
	rec := ref("r", nil, nil)
	rec.Record = true
	changed := ref("c", []Desired{want("x", 2)}, []Owned{own("component:default/c", "x", 1)})
	same := ref("s", []Desired{want("y", 1)}, []Owned{own("component:default/s", "y", 1)})
	c := Compute(Input{Refs: []Ref{rec, changed, same, gone}, Stale: StaleDefer})
	if len(c.Observed) != 2 || !c.Observed["component:default/r"].Equal(t0) || !c.Observed["component:default/c"].Equal(t0) {
		t.Fatalf("observed %v: want the ref asking for it and the changed one, not the unchanged or gone ones", c.Observed)
	}
}

// A ref's new content version is recorded with its observation; an
// unchanged version, a partial mapping or a gone entity records none.
func TestComputeRecordsVersions(t *testing.T) {
	const a = "component:default/a"
	newVer := ref("a", []Desired{want("x", 1)}, []Owned{own(a, "x", 1)})
	newVer.Version, newVer.OwnedVersion = 2, 1
	same := ref("s", []Desired{want("y", 1)}, []Owned{own("component:default/s", "y", 1)})
	same.Version, same.OwnedVersion = 5, 5
	partial := ref("p", nil, nil)
	partial.Version, partial.Partial = 3, true
	c := Compute(Input{Refs: []Ref{newVer, same, partial}, Stale: StaleDefer})
	if len(c.Versions) != 1 || c.Versions[a] != 2 || len(c.Observed) != 1 || c.UnchangedTotal() != 2 {
		t.Fatalf("versions %v observed %v unchanged %d", c.Versions, c.Observed, c.UnchangedTotal())
	}
}

func TestPolicies(t *testing.T) {
	const a = "component:default/a"
	base := func() *Changes {
		gone := ref("g", nil, []Owned{own("component:default/g", "z", 1)})
		gone.Gone = true
		return Compute(Input{Refs: []Ref{
			ref("a", []Desired{want("new", 1), want("upd", 2)}, []Owned{own(a, "upd", 1), own(a, "old", 1)}),
			gone,
		}})
	}
	tests := []struct {
		policy string
		want   string
	}{
		{PolicySync, "create:new@a update:upd@a delete:old@a delete:z@g forget:g"},
		{PolicyUpsertOnly, "create:new@a update:upd@a delete:old@a delete:z@g"},
		{PolicyCreateOnly, "create:new@a update:upd@a delete:old@a delete:z@g"},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			p, err := PolicyFor(tt.policy)
			if err != nil {
				t.Fatal(err)
			}
			c := p.Apply(base())
			if got := summary(c); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
			switch tt.policy {
			case PolicySync:
				if len(c.Delete) != 2 || len(c.SuppressedDeletes) != 0 {
					t.Errorf("sync suppressed deletes: %+v", c.SuppressedDeletes)
				}
			case PolicyUpsertOnly:
				if len(c.Delete) != 0 || len(c.SuppressedDeletes) != 2 || len(c.Update) != 1 {
					t.Errorf("upsert-only: delete %d suppressed %d update %d", len(c.Delete), len(c.SuppressedDeletes), len(c.Update))
				}
			case PolicyCreateOnly:
				if len(c.Update) != 0 || len(c.SuppressedUpdates) != 1 || len(c.Delete) != 0 || len(c.SuppressedDeletes) != 2 || len(c.Create) != 1 {
					t.Errorf("create-only: %+v", summary(c))
				}
			}
			if tt.policy != PolicySync && len(c.Forget) != 0 {
				t.Errorf("a ref whose deletion was suppressed was forgotten: %v", c.Forget)
			}
			if c.Policy != tt.policy {
				t.Errorf("policy %q", c.Policy)
			}
		})
	}
	if _, err := PolicyFor("delete-all"); err == nil {
		t.Error("unknown policy accepted")
	}
}

func deletions(n int, bp string) *Changes {
	c := &Changes{}
	for i := range n {
		c.Delete = append(c.Delete, Change{Action: Delete, Key: Key{Blueprint: bp, Identifier: string(rune('a' + i%26))}, Ref: "r"})
	}
	return c
}

func TestGuard(t *testing.T) {
	complete := &ScanProof{Seen: 100, Total: 100}
	tests := []struct {
		name    string
		guard   Guard
		deletes int
		scope   Scope
		refused RefusalReason // "" when allowed
		message string
	}{
		{"a small share is allowed", Guard{Threshold: 0.9}, 5, Scope{Owned: map[string]int{"component": 100}, Scan: complete}, "", ""},
		{"exactly the threshold is allowed", Guard{Threshold: 0.5}, 50, Scope{Owned: map[string]int{"component": 100}, Scan: complete}, "", ""},
		{"above the threshold is refused", Guard{Threshold: 0.5}, 51, Scope{Owned: map[string]int{"component": 100}, Scan: complete}, RefusedThreshold, "51 of 100"},
		{"threshold 0 refuses every deletion", Guard{Threshold: 0}, 1, Scope{Owned: map[string]int{"component": 100}, Scan: complete}, RefusedDisabled, "disables deletion"},
		{"threshold 1 allows everything", Guard{Threshold: 1}, 100, Scope{Owned: map[string]int{"component": 100}, Scan: complete}, "", ""},
		{"a failed page refuses", Guard{Threshold: 1}, 1, Scope{Owned: map[string]int{"component": 100}, Scan: &ScanProof{Err: "503", Seen: 50, Total: 100}}, RefusedIncompleteScan, "503"},
		{"a short scan refuses", Guard{Threshold: 1}, 1, Scope{Owned: map[string]int{"component": 100}, Scan: &ScanProof{Seen: 50, Total: 100}}, RefusedIncompleteScan, "read 50 entities but the catalog reports totalItems 100"},
		{"a count within the observed changes is complete", Guard{Threshold: 1}, 1, Scope{Owned: map[string]int{"component": 100}, Scan: &ScanProof{Seen: 98, Total: 100, Tolerance: 2}}, "", ""},
		{"an unknown total refuses", Guard{Threshold: 1}, 1, Scope{Owned: map[string]int{"component": 100}, Scan: &ScanProof{Seen: 98, Total: -1}}, RefusedIncompleteScan, "totalItems"},
		{"the change path counts its window", Guard{Threshold: 0.9}, 1, Scope{Owned: map[string]int{"component": 100}, Recent: map[string]int{"component": 90}}, RefusedThreshold, "91 of 100"},
		{"announced deletions count before they happen", Guard{Threshold: 0.9}, 1, Scope{Owned: map[string]int{"component": 100}, Pending: 94}, RefusedThreshold, "95 of 100"},
		{"one blueprint emptied among many is refused", Guard{Threshold: 0.9}, 20, Scope{Owned: map[string]int{"component": 20, "api": 500}, Scan: complete}, RefusedThreshold, "blueprint component"},
		{"unknown ownership refuses even one deletion", Guard{Threshold: 1}, 1, Scope{Owned: map[string]int{"component": 100}, Scan: complete, OwnershipUnknown: "Port's data-source listing failed: 503"},
			RefusedOwnershipUnknown, "ownership is not known: Port's data-source listing failed: 503"},
		{"unknown ownership refuses on the change path", Guard{Threshold: 0.9}, 1, Scope{Owned: map[string]int{"component": 100}, OwnershipUnknown: "x"}, RefusedOwnershipUnknown, "not deleting 1 entities"},
		{"a small blueprint may be emptied", Guard{Threshold: 0.9}, 3, Scope{Owned: map[string]int{"component": 3, "api": 500}, Scan: complete}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.guard.Check(deletions(tt.deletes, "component"), tt.scope)
			if tt.refused == "" {
				if c.Refusal != nil || len(c.Delete) != tt.deletes {
					t.Fatalf("refused: %+v", c.Refusal)
				}
				return
			}
			if c.Refusal == nil || c.Refusal.Reason != tt.refused || len(c.Delete) != 0 || len(c.RefusedDeletes) != tt.deletes {
				t.Fatalf("refusal %+v, %d deletes left, %d refused", c.Refusal, len(c.Delete), len(c.RefusedDeletes))
			}
			if !strings.Contains(c.Refusal.Message, tt.message) {
				t.Errorf("message %q lacks %q", c.Refusal.Message, tt.message)
			}
		})
	}
}

func TestGuardKeepsRecordsOfRefusedRefs(t *testing.T) {
	gone := ref("a", nil, []Owned{own("component:default/a", "x", 1)})
	gone.Gone = true
	c := Compute(Input{Refs: []Ref{gone}})
	c = Guard{Threshold: 0}.Check(c, Scope{Owned: map[string]int{"component": 1}})
	if len(c.Forget) != 0 || len(c.RefusedDeletes) != 1 {
		t.Fatalf("forget %v refused %d", c.Forget, len(c.RefusedDeletes))
	}
}

func TestFieldChanges(t *testing.T) {
	tests := []struct {
		name     string
		old, new map[string]any
		want     []FieldChange
	}{
		{"same", map[string]any{"title": "a", "properties": map[string]any{"x": 1.0}}, map[string]any{"title": "a", "properties": map[string]any{"x": 1}}, nil},
		{"property changed", map[string]any{"properties": map[string]any{"description": "old"}}, map[string]any{"properties": map[string]any{"description": "new"}},
			[]FieldChange{{Path: "properties.description", Old: "old", New: "new"}}},
		{"empty equals absent", map[string]any{"properties": map[string]any{"tags": []any{}}}, map[string]any{}, nil},
		{"relation added and title removed", map[string]any{"title": "t"}, map[string]any{"relations": map[string]any{"system": "s"}},
			[]FieldChange{{Path: "title", Old: "t"}, {Path: "relations.system", New: "s"}}},
		{"new entity", nil, map[string]any{"identifier": "x"}, []FieldChange{{Path: "identifier", New: "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FieldChanges(tt.old, tt.new); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	a := Compute(Input{Refs: []Ref{ref("a", []Desired{want("x", 1)}, nil)}})
	b := Compute(Input{Refs: []Ref{ref("b", []Desired{want("y", 1)}, []Owned{own("component:default/b", "y", 1)})}})
	a.Merge(b)
	if len(a.Create) != 1 || a.UnchangedTotal() != 1 || len(a.Observed) != 1 {
		t.Fatalf("%s observed %d", summary(a), len(a.Observed))
	}
}
