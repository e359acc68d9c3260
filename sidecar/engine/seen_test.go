package engine

import (
	"testing"

	"github.com/portbridge/portbridge/sidecar/plan"
)

func TestSeenSet(t *testing.T) {
	a, b := plan.Key{Blueprint: "component", Identifier: "a"}, plan.Key{Blueprint: "api", Identifier: "b"}
	var s seenSet
	s.grow(8)
	s.add("component:default/x", []plan.Key{a})
	s.addAll("component:default/y")
	s.add("component:default/x", nil) // twice is fine
	s.freeze()
	for _, c := range []struct {
		ref  string
		key  plan.Key
		all  bool
		want bool
	}{
		{"component:default/x", plan.Key{}, false, true},
		{"component:default/x", a, false, true},
		{"component:default/x", b, false, false},
		{"component:default/x", plan.Key{}, true, false},
		{"component:default/y", plan.Key{}, true, true},
		{"component:default/y", a, false, false}, // addAll records no keys itself
		{"component:default/z", plan.Key{}, false, false},
		{"component:default/z", plan.Key{}, true, false},
	} {
		got := s.has(c.ref, c.key)
		if c.all {
			got = s.hasAll(c.ref)
		}
		if got != c.want {
			t.Errorf("%s %v all=%v: got %v", c.ref, c.key, c.all, got)
		}
	}
}
