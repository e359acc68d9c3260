package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
)

// What Port steers: the mapping (hot-applied), and what it is told back —
// pass events with the next scheduled resync and raw examples.

// Settings are the global flags of a port-app-config the engine applies,
// and the blueprints the mapping writes.
type Settings struct {
	CreateMissingRelatedEntities bool
	MergeEntities                bool
	DeleteDependents             bool
	// DeletionThreshold is entityDeletionThreshold (0..1).
	DeletionThreshold float64
	// ManagedBlueprints are read by the verify pass.
	ManagedBlueprints []string
}

// configured is a Mapper that carries its port-app-config (mapping.Mapper
// does): installing it installs the config's global flags and managed
// blueprints too, so a mapping edited in Port brings its
// entityDeletionThreshold and createMissingRelatedEntities along.
type configured interface {
	Config() *mapping.Config
}

func settingsOf(c *mapping.Config) Settings {
	return Settings{CreateMissingRelatedEntities: c.CreateMissingRelatedEntities, MergeEntities: c.EnableMergeEntity,
		DeleteDependents: c.DeleteDependentEntities, DeletionThreshold: c.EntityDeletionThreshold, ManagedBlueprints: c.ManagedBlueprints()}
}

// settingsNow returns the settings in force.
func (e *Engine) settingsNow() Settings { return *e.settings.Load() }

// setSettings puts s in force for every later write, delete and guard
// check.
func (e *Engine) setSettings(s Settings) {
	e.settings.Store(&s)
	e.reg.SetWriteOptions(port.UpsertOptions{Merge: s.MergeEntities, CreateMissingRelatedEntities: s.CreateMissingRelatedEntities}, s.DeleteDependents)
	e.guard.setThreshold(s.DeletionThreshold)
}

// install puts a mapper in force, with its config's settings when it
// carries a config.
func (e *Engine) install(m Mapper) error {
	if c, ok := m.(configured); ok && c.Config() != nil {
		s := settingsOf(c.Config())
		if s.DeletionThreshold < 0 || s.DeletionThreshold > 1 {
			return fmt.Errorf("entityDeletionThreshold %v is outside 0..1", s.DeletionThreshold)
		}
		e.setSettings(s)
	}
	e.mapper.Store(&mapperBox{m})
	return nil
}

// ErrMappingUnchanged is returned by ApplyMapping for a mapping whose
// fingerprint and settings equal the one in force.
var ErrMappingUnchanged = errors.New("the mapping is the one in force")

// ApplyMapping hot-applies a new mapping without a restart: it is swapped
// in atomically (with its global flags when it carries its config) and a
// resync is requested. The hashes in the state file are over mapped
// output, so that resync writes only the Port entities whose output the new
// mapping changed; parked entities are tried again. It returns the
// resync's id.
func (e *Engine) ApplyMapping(ctx context.Context, m Mapper, reason string) (string, error) {
	if m == nil {
		return "", errors.New("apply mapping: no mapper")
	}
	old := e.mapperNow()
	before := e.settingsNow()
	if err := e.install(m); err != nil {
		return "", fmt.Errorf("apply mapping: %w", err)
	}
	if old.Fingerprint() == m.Fingerprint() && settingsEqual(before, e.settingsNow()) {
		return "", ErrMappingUnchanged
	}
	e.metrics.mappingChanges.Inc()
	e.log.Info("mapping changed; a resync writes the entities whose mapped output changed", "reason", reason,
		"fingerprint", m.Fingerprint(), "previous", old.Fingerprint())
	id, _, err := e.TriggerResync(ctx, "mapping", false)
	return id, err
}

func settingsEqual(a, b Settings) bool {
	return a.CreateMissingRelatedEntities == b.CreateMissingRelatedEntities && a.MergeEntities == b.MergeEntities &&
		a.DeleteDependents == b.DeleteDependents && a.DeletionThreshold == b.DeletionThreshold && slices.Equal(a.ManagedBlueprints, b.ManagedBlueprints)
}

// MappingFingerprint identifies the mapping in force.
func (e *Engine) MappingFingerprint() string { return e.mapperNow().Fingerprint() }

// PassEvent tells a subscriber that a resync started or finished (dry runs
// and verify passes are not reported).
type PassEvent struct {
	// Report is a snapshot of the pass.
	Report *Report
	// Finished is false for the start, true for the end.
	Finished bool
	// Next is when the timer starts the next resync; zero without a timer
	// (sync.resyncInterval 0, or a one-shot run).
	Next time.Time
	// Interval is sync.resyncInterval.
	Interval time.Duration
	// Examples are, on the end of a resync, up to ExamplesPerKind raw
	// catalog entities of each kind (lower-case), unmasked: the latest the
	// engine read in full, on the change path or in a resync (a two-phase
	// resync reads only the entities that changed).
	Examples map[string][]catalog.Entity
}

// ExamplesPerKind is how many raw entities per kind a resync hands to the
// subscribers.
const ExamplesPerKind = 5

// subscribers receive pass events.
type subscribers struct {
	mu  sync.Mutex
	fns []func(PassEvent)
}

// Subscribe registers fn for pass events. fn runs on the pass's goroutine:
// it must return quickly (queue the event, do not call Port).
func (e *Engine) Subscribe(fn func(PassEvent)) {
	e.subs.mu.Lock()
	defer e.subs.mu.Unlock()
	e.subs.fns = append(e.subs.fns, fn)
}

// emit tells the subscribers about a resync pass.
func (e *Engine) emit(rep *Report, finished bool) {
	if rep.Verify || rep.DryRun {
		return
	}
	e.subs.mu.Lock()
	fns := slices.Clone(e.subs.fns)
	e.subs.mu.Unlock()
	if len(fns) == 0 {
		return
	}
	ev := PassEvent{Report: rep.Snapshot(), Finished: finished, Interval: e.opts.ResyncInterval, Next: e.passes.nextResync()}
	if finished {
		rep.mu.Lock()
		ev.Examples = rep.examples
		rep.mu.Unlock()
	}
	for _, fn := range fns {
		fn(ev)
	}
}

// examples collects the first ExamplesPerKind raw entities of each kind a
// resync reads (one goroutine: the scan's).
type examples map[string][]catalog.Entity

func (x examples) add(ent catalog.Entity) {
	kind, _ := ent["kind"].(string)
	if kind == "" {
		return
	}
	k := lower(kind)
	if len(x[k]) < ExamplesPerKind {
		x[k] = append(x[k], ent)
	}
}
