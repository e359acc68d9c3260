package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/portbridge/portbridge/sidecar/redact"
)

// newLogger builds the process logger: JSON or text, at level, with every
// secret value and every URL's user info replaced by "[REDACTED]" wherever
// it appears in a message or attribute (an error from a library could quote
// a header or URL), and warnings and errors rate-limited per message (see
// sampler).
func newLogger(w io.Writer, format, level string, secrets []string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level))
	r := redact.New(secrets)
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		switch a.Value.Kind() {
		case slog.KindString:
			a.Value = slog.StringValue(r.String(a.Value.String()))
		case slog.KindAny:
			switch v := a.Value.Any().(type) {
			case error:
				a.Value = slog.StringValue(r.String(v.Error()))
			case fmt.Stringer:
				a.Value = slog.StringValue(r.String(v.String()))
			}
		}
		return a
	}}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(sampler{Handler: redactMessage{h, r}, s: newSampling(time.Minute, 20)})
}

// redactMessage redacts the record's message too (ReplaceAttr does not see
// it).
type redactMessage struct {
	slog.Handler
	r *redact.Redactor
}

func (h redactMessage) Handle(ctx context.Context, rec slog.Record) error {
	rec.Message = h.r.String(rec.Message)
	return h.Handler.Handle(ctx, rec)
}

func (h redactMessage) WithAttrs(as []slog.Attr) slog.Handler {
	return redactMessage{h.Handler.WithAttrs(as), h.r}
}

func (h redactMessage) WithGroup(name string) slog.Handler {
	return redactMessage{h.Handler.WithGroup(name), h.r}
}

// sampler rate-limits warnings and errors that could flood the log (an
// entity skipped by the mapping on every resync, a catalog entity over the
// limits, Port retries): per message text, the first `burst` records of
// each interval are written, the rest only counted, and the next record
// written for that message carries the count as "suppressed". Info and
// debug records pass untouched.
type sampler struct {
	slog.Handler
	s *sampling
}

type sampling struct {
	mu       sync.Mutex
	interval time.Duration
	burst    int
	windows  map[string]*window
}

type window struct {
	start      time.Time
	n          int
	suppressed int
}

// maxSampled bounds how many messages the sampler remembers.
const maxSampled = 1000

func newSampling(interval time.Duration, burst int) *sampling {
	return &sampling{interval: interval, burst: burst, windows: map[string]*window{}}
}

// allow decides whether a record with msg at t is written, and how many
// were suppressed before it.
func (s *sampling) allow(msg string, t time.Time) (bool, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.windows[msg]
	if w == nil {
		if len(s.windows) >= maxSampled {
			clear(s.windows)
		}
		w = &window{start: t}
		s.windows[msg] = w
	}
	if t.Sub(w.start) >= s.interval {
		w.start, w.n = t, 0
	}
	if w.n >= s.burst {
		w.suppressed++
		return false, 0
	}
	w.n++
	n := w.suppressed
	w.suppressed = 0
	return true, n
}

func (h sampler) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level < slog.LevelWarn {
		return h.Handler.Handle(ctx, rec)
	}
	ok, suppressed := h.s.allow(rec.Message, rec.Time)
	if !ok {
		return nil
	}
	if suppressed > 0 {
		rec = rec.Clone()
		rec.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.Handler.Handle(ctx, rec)
}

func (h sampler) WithAttrs(as []slog.Attr) slog.Handler {
	return sampler{h.Handler.WithAttrs(as), h.s}
}

func (h sampler) WithGroup(name string) slog.Handler {
	return sampler{h.Handler.WithGroup(name), h.s}
}
