package engine

import (
	"log/slog"
	"sync"
	"time"

	"github.com/portbridge/portbridge/sidecar/plan"
	"github.com/portbridge/portbridge/sidecar/registry"
)

// recentMax bounds the failures and conflicts status keeps.
const recentMax = 50

// Failure is one entity Port (or the registry) did not write or delete,
// with Port's reason, as status shows it.
type Failure struct {
	At         time.Time
	Path       string // change, resync, verify
	Ref        string
	Blueprint  string
	Identifier string
	Action     string
	Status     int // Port's HTTP status; 0 when Port did not answer
	Code       string
	Message    string
	Permanent  bool
	Attempt    int
}

// Conflict is a Port entity several Backstage entities map to.
type Conflict struct {
	At         time.Time
	Path       string
	Blueprint  string
	Identifier string
	Refs       []string
	Winner     string
}

// Refusal is the last time the guard held deletions back.
type Refusal struct {
	At      time.Time
	Path    string
	Reason  string
	Message string
	Refused int
	Planned int
	Owned   int
}

// events keeps what status reports beyond counters: the recent failures
// and conflicts, the last guard refusal, and the last error with its time.
type events struct {
	mu        sync.Mutex
	failures  []Failure // newest last
	conflicts []Conflict
	refusal   *Refusal
	refused   map[string]uint64 // per path
	lastErr   string
	lastErrAt time.Time
}

func newEvents() *events { return &events{refused: map[string]uint64{}} }

func (v *events) setErr(err error) {
	if err == nil {
		return
	}
	v.mu.Lock()
	v.lastErr, v.lastErrAt = err.Error(), time.Now()
	v.mu.Unlock()
}

// fail records and logs one failure.
func (v *events) fail(path string, f registry.Failure, attempt int, log *slog.Logger) {
	rec := Failure{At: time.Now(), Path: path, Ref: f.Ref, Blueprint: f.Key.Blueprint, Identifier: f.Key.Identifier, Action: string(f.Action),
		Status: f.Status, Code: f.Code, Message: f.Message, Permanent: f.Permanent, Attempt: attempt}
	v.mu.Lock()
	v.failures = appendBounded(v.failures, rec)
	v.lastErr, v.lastErrAt = f.Err.Error(), rec.At
	v.mu.Unlock()
	log.Warn("Port did not take an entity", "path", path, "ref", f.Ref, "action", f.Action, "blueprint", f.Key.Blueprint, "identifier", f.Key.Identifier,
		"status", f.Status, "code", f.Code, "port_message", f.Message, "permanent", f.Permanent)
}

func (v *events) conflict(path string, c plan.Conflict) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.conflicts = appendBounded(v.conflicts, Conflict{At: time.Now(), Path: path, Blueprint: c.Blueprint, Identifier: c.Identifier, Refs: c.Refs, Winner: c.Winner})
}

func (v *events) refuse(path string, r *plan.Refusal, refused int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.refusal = &Refusal{At: time.Now(), Path: path, Reason: string(r.Reason), Message: r.Message, Refused: refused, Planned: r.Planned, Owned: r.Owned}
	v.refused[path] += uint64(refused)
}

func appendBounded[T any](s []T, v T) []T {
	if len(s) >= recentMax {
		copy(s, s[1:])
		s = s[:len(s)-1]
	}
	return append(s, v)
}

// noteChanges makes every held-back change of a plan visible: conflicts,
// policy suppressions and guard refusals are logged, counted in metrics,
// kept for status and added to the pass report rep (when not nil).
func (e *Engine) noteChanges(path string, rep *Report, ch *plan.Changes) {
	for _, c := range ch.Conflicts {
		e.events.conflict(path, c)
		e.metrics.conflicts.WithLabelValues(path).Inc()
		e.log.Warn("several Backstage entities map to one Port entity; the first in order writes it, the others only claim it",
			"path", path, "blueprint", c.Blueprint, "identifier", c.Identifier, "refs", c.Refs, "winner", c.Winner)
	}
	if n := len(ch.SuppressedUpdates); n > 0 {
		e.metrics.suppressed.WithLabelValues(ch.Policy, "update").Add(float64(n))
		e.log.Info("policy suppressed updates", "path", path, "policy", ch.Policy, "count", n)
	}
	if n := len(ch.SuppressedDeletes); n > 0 {
		e.metrics.suppressed.WithLabelValues(ch.Policy, "delete").Add(float64(n))
		e.log.Info("policy suppressed deletions", "path", path, "policy", ch.Policy, "count", n)
	}
	if ch.Refusal != nil && len(ch.RefusedDeletes) > 0 {
		e.events.refuse(path, ch.Refusal, len(ch.RefusedDeletes))
		e.metrics.refused.WithLabelValues(path, string(ch.Refusal.Reason)).Add(float64(len(ch.RefusedDeletes)))
		e.log.Warn("deletions refused by the guard", "path", path, "reason", ch.Refusal.Reason, "refused", len(ch.RefusedDeletes), "message", ch.Refusal.Message)
	}
	if rep != nil {
		rep.note(ch)
	}
}

// deletionGuard is the plan's guard plus the change path's window: the
// deletions weighed in the last window, refused or not, so that a burst
// arriving one entity at a time is judged as a whole.
type deletionGuard struct {
	window time.Duration
	// changeMu makes a change-path weighing — the window, the announced
	// deletions, the check and adding its own — one step: two workers
	// weighing at once could each miss the other's deletions (read the
	// window before the other added them, the queue after).
	changeMu sync.Mutex

	mu      sync.Mutex
	g       plan.Guard // guarded by mu (a mapping change sets its threshold)
	weighed []weighed
	refs    map[string]int // refs with deletions in weighed
}

// check runs the guard with the threshold in force.
func (d *deletionGuard) check(ch *plan.Changes, s plan.Scope) *plan.Changes {
	d.mu.Lock()
	g := d.g
	d.mu.Unlock()
	return g.Check(ch, s)
}

func (d *deletionGuard) setThreshold(t float64) {
	d.mu.Lock()
	d.g.Threshold = t
	d.mu.Unlock()
}

type weighed struct {
	at        time.Time
	blueprint string
	ref       string
}

func newDeletionGuard(g plan.Guard, window time.Duration) *deletionGuard {
	return &deletionGuard{g: g, window: window, refs: map[string]int{}}
}

// inWindow reports whether ref's deletions were weighed in the window
// already (so they are not counted again as announced).
func (d *deletionGuard) inWindow(ref string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.refs[ref] > 0
}

// recent counts the deletions of the window per blueprint.
func (d *deletionGuard) recent() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	cut := time.Now().Add(-d.window)
	i := 0
	for i < len(d.weighed) && d.weighed[i].at.Before(cut) {
		if d.refs[d.weighed[i].ref]--; d.refs[d.weighed[i].ref] <= 0 {
			delete(d.refs, d.weighed[i].ref)
		}
		i++
	}
	d.weighed = d.weighed[i:]
	out := map[string]int{}
	for _, w := range d.weighed {
		out[w.blueprint]++
	}
	return out
}

func (d *deletionGuard) add(cs []plan.Change) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	for _, c := range cs {
		d.weighed = append(d.weighed, weighed{now, c.Blueprint, c.Ref})
		d.refs[c.Ref]++
	}
}
