package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
)

// newLogger builds the process logger: JSON or text, at level, with every
// secret value replaced by "[REDACTED]" wherever it appears in a message or
// attribute (an error from a library could quote a header or URL).
func newLogger(w io.Writer, format, level string, secrets []string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level))
	r := redactor(secrets)
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		switch a.Value.Kind() {
		case slog.KindString:
			a.Value = slog.StringValue(r.Replace(a.Value.String()))
		case slog.KindAny:
			if err, ok := a.Value.Any().(error); ok {
				a.Value = slog.StringValue(r.Replace(err.Error()))
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
	return slog.New(redactMessage{h, r})
}

func redactor(secrets []string) *strings.Replacer {
	var pairs []string
	for _, s := range secrets {
		if len(s) >= 4 {
			pairs = append(pairs, s, "[REDACTED]")
		}
	}
	return strings.NewReplacer(pairs...)
}

// redactMessage redacts the record's message too (ReplaceAttr does not see
// it).
type redactMessage struct {
	slog.Handler
	r *strings.Replacer
}

func (h redactMessage) Handle(ctx context.Context, rec slog.Record) error {
	rec.Message = h.r.Replace(rec.Message)
	return h.Handler.Handle(ctx, rec)
}

func (h redactMessage) WithAttrs(as []slog.Attr) slog.Handler {
	return redactMessage{h.Handler.WithAttrs(as), h.r}
}

func (h redactMessage) WithGroup(name string) slog.Handler {
	return redactMessage{h.Handler.WithGroup(name), h.r}
}
