// Package integration is the sidecar's side of Port's integration model,
// so that Port users can see and steer it from Port's UI: it registers the
// installation as an integration of its own in Port (found or created at
// start, version kept current), takes the mapping from the integration's
// config when mapping.source is port (polled, compiled, validated against
// the blueprints and hot-applied; an invalid edit is refused with the
// reason reported to Port), honours resync requests made in Port, and
// reports resync state, a summary line per resync to the integration's
// event log, and raw examples per kind for the mapping editor.
//
// It talks to Port through the small Port interface and to the engine
// through Engine; both are declared here.
package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
)

// AppType is the installationAppType portbridge registers with: its own,
// never Ocean's "backstage", so Port's UI does not offer Ocean's hosted
// installation or defaults for it.
const AppType = "portbridge"

// Port is what the loop needs from Port's API (port.Client).
type Port interface {
	GetIntegration(ctx context.Context, id string) (*port.Integration, error)
	CreateIntegration(ctx context.Context, in port.NewIntegration, upsert bool) (*port.Integration, error)
	PatchIntegration(ctx context.Context, id string, patch port.IntegrationPatch) (*port.Integration, error)
	PatchIntegrationConfig(ctx context.Context, id string, config map[string]any, skipResync bool) (*port.Integration, error)
	GetResyncRequest(ctx context.Context, id string) (*port.ResyncRequest, error)
	PatchResyncState(ctx context.Context, id string, u port.ResyncStateUpdate) (*port.ResyncState, error)
	PostKindExamples(ctx context.Context, id, kind string, examples []map[string]any) error
	PostIntegrationLogs(ctx context.Context, ingestURL string, lines []port.LogLine) error
}

// Engine is what the loop needs from the sync engine (engine.Engine).
type Engine interface {
	ApplyMapping(ctx context.Context, m engine.Mapper, reason string) (string, error)
	TriggerResync(ctx context.Context, reason string, verify bool) (string, bool, error)
	Subscribe(fn func(engine.PassEvent))
}

// ErrInvalidMapping is wrapped by Options.Compile's error for a mapping
// that is wrong (it does not load, compile, or fit the blueprints), as
// opposed to one that could not be checked (Port unreachable): a wrong
// mapping is refused and reported once; an unchecked one is tried again.
var ErrInvalidMapping = errors.New("invalid mapping")

// ErrForeignIntegration is returned when the identifier names an
// integration of another type (Ocean's, say): portbridge never takes it
// over.
var ErrForeignIntegration = errors.New("the integration belongs to another integration type")

// Options configure a Loop.
type Options struct {
	// Identifier is port.integration.identifier.
	Identifier string
	// Title is given to a new integration.
	Title string
	// Version is portbridge's version, kept current in Port.
	Version string
	// FromPort is mapping.source: port — the mapping is the integration's
	// config in Port.
	FromPort bool
	// FileMapping is the mapping document of mapping.file (or the embedded
	// default): what a new or empty integration config is set to, and,
	// when the mapping does not come from Port, what Port's config shows.
	FileMapping map[string]any
	// Compile builds a mapper from an integration config, checked against
	// the blueprints as Port has them; its error wraps ErrInvalidMapping
	// for a wrong mapping.
	Compile func(ctx context.Context, config map[string]any) (*mapping.Mapper, error)
	// PollInterval is how often the config and resync request are read
	// (default 60 s).
	PollInterval time.Duration
	// SendExamples sends raw examples after each resync.
	SendExamples bool
	Logger       *slog.Logger
}

// Loop registers the integration, polls it and reports to it. Create it
// with New; call Start before the first sync, Run while the daemon runs,
// and Flush before a one-shot run exits.
type Loop struct {
	opts Options
	port Port
	eng  Engine
	log  *slog.Logger

	events chan struct{} // kicks the reporter
	mu     sync.Mutex
	queue  []engine.PassEvent // pass events not reported yet; guarded by mu
	st     state              // guarded by mu
}

// state is the loop's bookkeeping, shown in status.
type state struct {
	registered   bool
	registeredAt time.Time
	ingestURL    string // the integration's log ingest URL
	regErr       string // the last registration error, logged once

	applied      string // hash of the config in force (from Port)
	refused      string // hash of the last config refused or ignored
	mappingErr   string
	mappingAt    time.Time
	fingerprint  string
	lastRequest  time.Time // the newest resync request handled
	lastPoll     time.Time
	pollErr      string
	reportErr    string
	kinds        []mapping.Resource      // the resources of the mapping in force (example kinds)
	examplesSent map[string]string       // kind → hash of the examples last sent
	lastState    *port.ResyncStateUpdate // the last resync state reported
}

// New builds a Loop and subscribes it to the engine's pass events.
func New(opts Options, p Port, eng Engine) (*Loop, error) {
	if err := port.ValidateIntegrationIdentifier(opts.Identifier); err != nil {
		return nil, fmt.Errorf("integration: %w", err)
	}
	if opts.Compile == nil {
		return nil, errors.New("integration: no mapping compiler")
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Loop{opts: opts, port: p, eng: eng, log: opts.Logger.With("integration", opts.Identifier), events: make(chan struct{}, 1),
		st: state{examplesSent: map[string]string{}}}
	eng.Subscribe(l.onPass)
	return l, nil
}

// Start registers the integration (dry run: only reads it) and returns the
// mapper to start with when the mapping comes from Port, or nil when it
// comes from the file. With the mapping from Port, a config Port does not
// have yet is set to the file mapping first, so Port's UI shows it; a
// config that is wrong is refused (reported to Port) and Start fails.
func (l *Loop) Start(ctx context.Context, dryRun bool) (*mapping.Mapper, error) {
	in, err := l.register(ctx, dryRun)
	if err != nil {
		if l.opts.FromPort {
			return nil, err // no mapping without the integration
		}
		l.noteRegErr(err)
		return nil, nil
	}
	if in == nil { // dry run, not registered yet
		if l.opts.FromPort {
			l.log.Warn("dry run: the integration does not exist in Port yet; planning with the file mapping")
		}
		return nil, nil
	}
	if !l.opts.FromPort {
		return nil, nil
	}
	m, err := l.opts.Compile(ctx, in.Config)
	if err != nil {
		l.mu.Lock()
		again := l.st.refused == hashConfig(in.Config)
		l.mu.Unlock()
		if errors.Is(err, ErrInvalidMapping) && !again && !dryRun { // Start is retried: report a config once; a dry run writes nothing
			l.refuse(ctx, hashConfig(in.Config), err)
		}
		return nil, fmt.Errorf("the mapping in integration %q's config in Port: %w", l.opts.Identifier, err)
	}
	l.mu.Lock()
	l.st.applied, l.st.fingerprint, l.st.mappingAt, l.st.kinds = hashConfig(in.Config), m.Fingerprint(), time.Now(), m.Config().Resources
	l.mu.Unlock()
	return m, nil
}

// UseMapping records the mapping in force when it comes from the file, for
// the example kinds and status.
func (l *Loop) UseMapping(m *mapping.Mapper) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.kinds, l.st.fingerprint = m.Config().Resources, m.Fingerprint()
}

// register finds or creates the integration and keeps its version, type
// and config current. In a dry run it only reads (nil when absent).
func (l *Loop) register(ctx context.Context, dryRun bool) (*port.Integration, error) {
	id := l.opts.Identifier
	in, err := l.port.GetIntegration(ctx, id)
	switch {
	case port.IsNotFound(err) && dryRun:
		return nil, nil
	case port.IsNotFound(err):
		in, err = l.port.CreateIntegration(ctx, port.NewIntegration{Identifier: id, Title: l.opts.Title, Version: l.opts.Version,
			InstallationAppType: AppType, Config: l.opts.FileMapping}, false)
		if port.IsConflict(err) { // created meanwhile by another process with the same identifier
			in, err = l.port.GetIntegration(ctx, id)
		}
		if err != nil {
			return nil, fmt.Errorf("create integration %q in Port: %w", id, err)
		}
		l.log.Info("integration created in Port", "type", AppType, "version", l.opts.Version, "mapping_written", l.opts.FileMapping != nil)
	case err != nil:
		return nil, fmt.Errorf("read integration %q from Port: %w", id, err)
	}
	if in.InstallationAppType != "" && in.InstallationAppType != AppType {
		return nil, fmt.Errorf("%w: integration %q in Port has type %q, not %q; set port.integration.identifier to an identifier of its own",
			ErrForeignIntegration, id, in.InstallationAppType, AppType)
	}
	if dryRun {
		return in, nil
	}
	var patch port.IntegrationPatch
	if in.Version != l.opts.Version {
		patch.Version = l.opts.Version
	}
	if in.InstallationAppType != AppType {
		patch.InstallationAppType = AppType
	}
	if in.Title == nil && l.opts.Title != "" {
		patch.Title = &l.opts.Title
	}
	if patch.Version != "" || patch.InstallationAppType != "" || patch.Title != nil {
		if in, err = l.port.PatchIntegration(ctx, id, patch); err != nil {
			return nil, fmt.Errorf("update integration %q in Port (version %s): %w", id, l.opts.Version, err)
		}
		l.log.Info("integration updated in Port", "version", l.opts.Version)
	}
	// Port's UI shows the config: it starts as the file mapping, and shows
	// the file mapping whenever that is the one in force.
	empty := len(in.Config) == 0 || in.Config["resources"] == nil
	if l.opts.FileMapping != nil && (empty || !l.opts.FromPort && hashConfig(in.Config) != hashConfig(l.opts.FileMapping)) {
		if in, err = l.port.PatchIntegrationConfig(ctx, id, l.opts.FileMapping, true); err != nil {
			return nil, fmt.Errorf("write the mapping to integration %q's config in Port: %w", id, err)
		}
		l.log.Info("mapping written to the integration's config in Port", "from_port", l.opts.FromPort)
	}
	rr, err := l.port.GetResyncRequest(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read integration %q's resync request: %w", id, err)
	}
	l.mu.Lock()
	l.st.registered, l.st.registeredAt, l.st.regErr = true, time.Now(), ""
	if in.LogAttributes != nil {
		l.st.ingestURL = in.LogAttributes.IngestURL
	}
	if rr != nil && rr.UpdatedAt.After(l.st.lastRequest) {
		// Requests made before this start are covered by the start's own
		// resync (or, with resyncOnStart off, deliberately not run).
		l.st.lastRequest = rr.UpdatedAt
	}
	if !l.opts.FromPort {
		l.st.applied = hashConfig(l.opts.FileMapping)
	}
	l.mu.Unlock()
	return in, nil
}

// noteRegErr logs a registration error once per distinct message.
func (l *Loop) noteRegErr(err error) {
	l.mu.Lock()
	again := l.st.regErr == err.Error()
	l.st.regErr = err.Error()
	l.mu.Unlock()
	if !again {
		l.log.Error("cannot register the integration in Port; syncing goes on, Port's UI does not show or steer it until this works (tried again every poll)", "error", err)
	}
}

// hashConfig identifies a config's content (canonical JSON: Go sorts map
// keys).
func hashConfig(c map[string]any) string {
	if len(c) == 0 {
		return "empty"
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "unencodable"
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:12])
}
