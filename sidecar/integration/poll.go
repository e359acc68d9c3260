package integration

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/port"
)

// Run polls the integration every PollInterval — its config (the mapping,
// when it comes from Port) and its resync request, two requests a poll —
// and reports pass events as they come, until ctx ends. It registers the
// integration first if Start could not.
func (l *Loop) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.reportLoop(ctx)
	}()
	t := time.NewTicker(l.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			return
		case <-t.C:
		}
		l.Poll(ctx)
	}
}

// Poll reads the integration once: a changed config is applied (or
// refused), a newer resync request starts a resync.
func (l *Loop) Poll(ctx context.Context) {
	l.mu.Lock()
	registered := l.st.registered
	l.mu.Unlock()
	if !registered {
		if _, err := l.register(ctx, false); err != nil {
			l.notePoll(err)
			l.noteRegErr(err)
			return
		}
	}
	in, err := l.port.GetIntegration(ctx, l.opts.Identifier)
	if port.IsNotFound(err) {
		// Deleted in Port's UI: register again at the next poll.
		l.mu.Lock()
		l.st.registered = false
		l.mu.Unlock()
		l.log.Warn("the integration was deleted in Port; it is created again at the next poll")
	}
	if err != nil {
		l.notePoll(fmt.Errorf("read integration %q: %w", l.opts.Identifier, err))
		return
	}
	if in.LogAttributes != nil {
		l.mu.Lock()
		l.st.ingestURL = in.LogAttributes.IngestURL
		l.mu.Unlock()
	}
	l.checkConfig(ctx, in.Config)
	rr, err := l.port.GetResyncRequest(ctx, l.opts.Identifier)
	if err != nil {
		l.notePoll(fmt.Errorf("read integration %q's resync request: %w", l.opts.Identifier, err))
		return
	}
	l.notePoll(nil)
	l.mu.Lock()
	newer := rr != nil && rr.UpdatedAt.After(l.st.lastRequest)
	if newer {
		l.st.lastRequest = rr.UpdatedAt
	}
	l.mu.Unlock()
	if newer {
		id, already, err := l.eng.TriggerResync(ctx, "port", false)
		if err != nil {
			l.log.Error("cannot start the resync requested in Port", "error", err)
			return
		}
		l.log.Info("resync requested in Port", "request", rr.ID, "requested_at", rr.UpdatedAt, "resync", id, "already_running", already)
	}
}

func (l *Loop) notePoll(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.lastPoll = time.Now()
	if err == nil {
		l.st.pollErr = ""
		return
	}
	if l.st.pollErr != err.Error() {
		l.log.Warn("polling the integration in Port failed; trying again at the next poll", "error", err)
	}
	l.st.pollErr = err.Error()
}

// checkConfig applies a changed config when the mapping comes from Port,
// or says once that an edit is ignored when it comes from the file.
func (l *Loop) checkConfig(ctx context.Context, cfg map[string]any) {
	h := hashConfig(cfg)
	l.mu.Lock()
	known := h == l.st.applied || h == l.st.refused
	if h == l.st.applied {
		// Back to the mapping in force (a refused edit was undone).
		l.st.refused, l.st.mappingErr = "", ""
	}
	l.mu.Unlock()
	if known {
		return
	}
	if !l.opts.FromPort {
		l.mu.Lock()
		l.st.refused = h
		l.mu.Unlock()
		msg := "the mapping was edited in Port but mapping.source is file: the edit is ignored (set mapping.source: port to steer the mapping from Port)"
		l.log.Warn(msg)
		l.logToPort(ctx, port.LogLine{Level: "WARNING", Message: msg})
		return
	}
	m, err := l.opts.Compile(ctx, cfg)
	if err != nil {
		if errors.Is(err, ErrInvalidMapping) {
			l.refuse(ctx, h, err)
			return
		}
		// Could not be checked (Port unreachable): try at the next poll.
		l.log.Warn("cannot check the mapping edited in Port yet; trying again at the next poll", "error", err)
		return
	}
	id, err := l.eng.ApplyMapping(ctx, m, "edited in Port")
	if err != nil && !errors.Is(err, engine.ErrMappingUnchanged) {
		l.log.Error("cannot apply the mapping edited in Port", "error", err)
		return
	}
	l.mu.Lock()
	l.st.applied, l.st.refused, l.st.mappingErr, l.st.mappingAt = h, "", "", time.Now()
	l.st.fingerprint, l.st.kinds = m.Fingerprint(), m.Config().Resources
	l.mu.Unlock()
	if errors.Is(err, engine.ErrMappingUnchanged) {
		return
	}
	msg := fmt.Sprintf("mapping edited in Port applied (fingerprint %s); resync %s writes the entities whose mapped output changed", m.Fingerprint(), id)
	l.log.Info(msg)
	l.logToPort(ctx, port.LogLine{Level: "INFO", Message: msg})
}

// refuse keeps the mapping in force and tells Port why the config was
// refused: the resync state becomes failed and the reason goes to the
// integration's event log (once per config).
func (l *Loop) refuse(ctx context.Context, hash string, err error) {
	l.mu.Lock()
	l.st.refused, l.st.mappingErr = hash, err.Error()
	prev := l.st.lastState
	l.mu.Unlock()
	msg := "mapping refused, the previous mapping stays in force: " + err.Error()
	l.log.Error("mapping edited in Port refused; the previous mapping stays in force", "error", err)
	u := port.ResyncStateUpdate{Status: port.ResyncFailed}
	now := time.Now()
	u.LastResyncEnd = &now
	if prev != nil {
		u.LastResyncStart, u.NextResync, u.Interval = prev.LastResyncStart, prev.NextResync, prev.Interval
	}
	l.reportState(ctx, u)
	l.logToPort(ctx, port.LogLine{Level: "ERROR", Message: msg})
}
