package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLoggerRedacts(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := newLogger(&buf, "json", "info", []string{"tok-secret-1"})
	log.Info("calling https://user:pa55@backstage:7007 with tok-secret-1", "url", "http://a:b@host/x",
		"err", errors.New(`Get "https://u:pw@h/api": refused`))
	out := buf.String()
	for _, leak := range []string{"pa55", "tok-secret-1", "a:b@", "u:pw"} {
		if strings.Contains(out, leak) {
			t.Errorf("log shows %q: %s", leak, out)
		}
	}
	if !strings.Contains(out, "https://[REDACTED]@backstage:7007") {
		t.Errorf("log: %s", out)
	}
}

// Warnings that repeat are rate-limited per message; the next one written
// says how many were left out. Info passes untouched.
func TestLoggerRateLimitsWarnings(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := newLogger(&buf, "text", "info", nil)
	for i := range 100 {
		log.Warn("mapping skipped an entity", "ref", i)
		log.Info("progress", "i", i)
	}
	log.Warn("another warning")
	out := buf.String()
	if n := strings.Count(out, "mapping skipped an entity"); n != 20 {
		t.Errorf("%d of 100 repeated warnings written, want 20", n)
	}
	if n := strings.Count(out, "msg=progress"); n != 100 {
		t.Errorf("%d of 100 info records written", n)
	}
	if !strings.Contains(out, "another warning") {
		t.Error("a different warning was suppressed")
	}
	s := newSampling(time.Minute, 2)
	t0 := time.Now()
	for i := range 5 {
		s.allow("m", t0.Add(time.Duration(i)*time.Second))
	}
	if ok, suppressed := s.allow("m", t0.Add(2*time.Minute)); !ok || suppressed != 3 {
		t.Errorf("next window: %v, %d suppressed, want true and 3", ok, suppressed)
	}
}
