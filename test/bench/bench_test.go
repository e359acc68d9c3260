package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMeasureTiny runs every row with tiny sizes against the real binary
// and emulators. It asserts that each measurement was taken and printed,
// never the measured numbers (those are for `make bench`).
func TestMeasureTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the sidecar and runs it as a child process")
	}
	cfg := DefaultConfig()
	cfg.N, cfg.Rate, cfg.Duration = 300, 100, 500*time.Millisecond
	var progress bytes.Buffer
	rep := Measure(context.Background(), cfg, &progress)
	_, jqErr := exec.LookPath(cfg.JQ)
	for _, err := range rep.Errors {
		if jqErr != nil && strings.Contains(err.Error(), "jq command line tool") {
			continue // the mapping row needs Debian's jq
		}
		t.Errorf("measurement not taken: %v\nprogress:\n%s", err, progress.String())
	}
	want := []string{"mapping: portbridge ÷ jq", "resync unchanged: catalog requests", "resync unchanged: Port write requests",
		"bridge heap (peak RssAnon), unchanged resync", "resync unchanged: bridge CPU per entity", "state file per entity", "bulk upserts", "notification → Port p99"}
	if jqErr != nil {
		want = want[1:]
	}
	for _, w := range want {
		if !hasRow(rep, w) {
			t.Errorf("no row %q in the report", w)
		}
	}
	var out bytes.Buffer
	rep.Print(&out)
	for _, w := range []string{"what", "measured", "target", "result", "How each row was measured"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("printed table lacks %q:\n%s", w, out.String())
		}
	}
}

// TestMeasureScaleTiny runs the scale mode at two tiny sizes and checks the
// table, the plots and the Markdown file were written.
func TestMeasureScaleTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the sidecar and runs it and the emulators as child processes")
	}
	cfg := DefaultConfig()
	cfg.Scale, cfg.Out = []int{200, 600}, t.TempDir()
	var progress bytes.Buffer
	rep := Measure(context.Background(), cfg, &progress)
	for _, err := range rep.Errors {
		t.Errorf("measurement not taken: %v\nprogress:\n%s", err, progress.String())
	}
	for _, w := range []string{"unchanged resync: wall time", "unchanged resync: bridge CPU per entity", "unchanged resync: catalog requests",
		"unchanged resync: bridge heap (peak RssAnon)", "initial push: bridge mapped files (peak RssFile)", "state file per entity",
		"catalog emulator work per request (records touched, unchanged resync)", "catalog emulator CPU per request (unchanged resync)"} {
		found := false
		for _, r := range rep.Scale {
			if r.What == w && len(r.Values) == 2 && r.Values[0] != "" && r.Values[1] != "" {
				found = true
			}
		}
		if !found {
			t.Errorf("no scale row %q with two values: %+v", w, rep.Scale)
		}
	}
	for _, f := range []string{"scale-time.svg", "scale-memory.svg", "scale.md"} {
		b, err := os.ReadFile(filepath.Join(cfg.Out, f))
		if err != nil || len(b) < 100 {
			t.Errorf("%s: %v (%d bytes)", f, err, len(b))
		}
		if strings.HasSuffix(f, ".svg") {
			if err := xml.Unmarshal(b, new(struct{ XMLName xml.Name })); err != nil {
				t.Errorf("%s is not well-formed XML: %v", f, err)
			}
		}
	}
	var out bytes.Buffer
	rep.Print(&out)
	for _, w := range []string{"N=200", "N=600", "growth", "unchanged resync: wall time"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("printed scale table lacks %q:\n%s", w, out.String())
		}
	}
}

func TestChartSVG(t *testing.T) {
	t.Parallel()
	c := chart{Title: "t <&>", XLabel: "x", YLabel: "y", X: []float64{1e5, 1e6}, XTick: func(x float64) string { return count(int(x)) },
		Series: []series{{Name: "a", Values: []float64{1, 10}, Color: "#000"}, {Name: "b", Values: []float64{2, 3}, Dashed: true, Color: "#f00"}}}
	b := c.SVG()
	if err := xml.Unmarshal(b, new(struct{ XMLName xml.Name })); err != nil {
		t.Fatalf("not well-formed: %v\n%s", err, b)
	}
	for _, w := range []string{"1,000,000", "t &lt;&amp;&gt;", "stroke-dasharray", "<polyline"} {
		if !strings.Contains(string(b), w) {
			t.Errorf("SVG lacks %q", w)
		}
	}
	// encoding/xml accepts an attribute given twice; SVG viewers do not
	for _, line := range strings.Split(string(b), "\n") {
		seen := map[string]bool{}
		for _, m := range regexp.MustCompile(`\s([a-z-]+)="`).FindAllStringSubmatch(line, -1) {
			if seen[m[1]] {
				t.Errorf("attribute %s twice in %s", m[1], line)
			}
			seen[m[1]] = true
		}
	}
	for _, tc := range []struct{ in, want float64 }{{0, 1}, {0.7, 1}, {3, 5}, {11, 20}, {150, 200}, {480, 500}} {
		if got := niceMax(tc.in); got != tc.want {
			t.Errorf("niceMax(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func hasRow(rep *Report, what string) bool {
	for _, r := range rep.Rows {
		if strings.Contains(r.What, what) && r.Result != Error && r.Measured != "" {
			return true
		}
	}
	return false
}

func TestFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		check   func(Config) bool
	}{
		{"defaults", nil, false, func(c Config) bool { return c.N == 100_000 && c.Duration == 10*time.Second && c.Rate == 200 }},
		{"quick", []string{"-quick"}, false, func(c Config) bool { return c.N == 2000 && c.Duration == 2*time.Second }},
		{"quick keeps explicit n", []string{"-quick", "-n", "5000"}, false, func(c Config) bool { return c.N == 5000 && c.Duration == 2*time.Second }},
		{"map-n", []string{"-n", "1000", "-map-n", "300"}, false, func(c Config) bool { return c.mapN() == 300 }},
		{"map-n defaults to n capped", []string{"-n", "80000"}, false, func(c Config) bool { return c.mapN() == 50_000 }},
		{"n too small", []string{"-n", "10"}, true, nil},
		{"negative rate", []string{"-rate", "-1"}, true, nil},
		{"zero duration", []string{"-duration", "0s"}, true, nil},
		{"unknown flag", []string{"-nope"}, true, nil},
		{"stray argument", []string{"extra"}, true, nil},
		{"scale", []string{"-scale", "100000,1_000_000"}, false, func(c Config) bool {
			return len(c.Scale) == 2 && c.Scale[1] == 1_000_000 && c.Out == "docs/bench"
		}},
		{"scale out", []string{"-scale", "300,900", "-out", ""}, false, func(c Config) bool { return c.Out == "" }},
		{"scale one size", []string{"-scale", "100000"}, true, nil},
		{"scale unsorted", []string{"-scale", "1000000,100000"}, true, nil},
		{"scale not a number", []string{"-scale", "100k,1M"}, true, nil},
		{"not a number", []string{"-n", "many"}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseFlags(tt.args, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseFlags(%q) error = %v, want error %v", tt.args, err, tt.wantErr)
			}
			if err == nil && !tt.check(cfg) {
				t.Errorf("parseFlags(%q) = %+v", tt.args, cfg)
			}
		})
	}
}

func TestHelpers(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		n    int
		want string
	}{{0, "0"}, {999, "999"}, {1000, "1,000"}, {100000, "100,000"}, {-1234567, "-1,234,567"}} {
		if got := count(tt.n); got != tt.want {
			t.Errorf("count(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	sorted := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 5}, {0.99, 10}, {0, 1}, {1, 10}} {
		if got := percentile(sorted, tt.p); got != tt.want {
			t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	refs := []string{"a", "b", "c", "d", "e", "f"}
	if got := spread(refs, 3); strings.Join(got, "") != "ace" {
		t.Errorf("spread(6 refs, 3) = %q", got)
	}
	if got := spread(refs, 10); len(got) != 6 {
		t.Errorf("spread(6 refs, 10) = %q", got)
	}
	if got := string(firstLines([]byte("1\n2\n3\n"), 2)); got != "1\n2\n" {
		t.Errorf("firstLines = %q", got)
	}
	if got := string(firstLines([]byte("1\n2"), 5)); got != "1\n2" {
		t.Errorf("firstLines short input = %q", got)
	}
}
