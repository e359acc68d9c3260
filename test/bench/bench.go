package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

// Config sets the sizes of one bench run.
type Config struct {
	N        int           // catalog entities for the resync rows
	MapN     int           // entities for the mapping row (0: N, capped at 50,000)
	Rate     float64       // changes per second in the latency row
	Duration time.Duration // how long the latency row publishes
	JQ       string        // the jq CLI
	Binary   string        // prebuilt portbridge binary; empty builds ./sidecar
	Keep     bool          // keep the temporary directory
	Verbose  bool          // copy child logs to the progress writer
}

// DefaultConfig is the full `make bench` run.
func DefaultConfig() Config {
	return Config{N: 100_000, Rate: 200, Duration: 10 * time.Second, JQ: "jq"}
}

func (c Config) mapN() int {
	if c.MapN > 0 {
		return c.MapN
	}
	return min(c.N, 50_000)
}

// Result is whether a row met its target.
type Result string

// Row results.
const (
	Pass  Result = "PASS"
	Miss  Result = "MISS"
	Info  Result = "info"  // no target: context for another row
	Error Result = "ERROR" // the measurement could not be taken
)

// Row is one line of the table.
type Row struct {
	What     string
	Measured string
	Target   string
	Result   Result
}

// Report is everything one run measured.
type Report struct {
	Config Config
	Rows   []Row
	// Notes explain how the rows were measured, one paragraph each.
	Notes  []string
	Errors []error
}

func (r *Report) row(what, measured, target string, res Result) {
	r.Rows = append(r.Rows, Row{What: what, Measured: measured, Target: target, Result: res})
}

func (r *Report) check(what, measured, target string, ok bool) {
	res := Miss
	if ok {
		res = Pass
	}
	r.row(what, measured, target, res)
}

func (r *Report) fail(what string, err error) {
	r.row(what, "not measured: "+oneLine(err.Error(), 90), "", Error)
	r.Errors = append(r.Errors, fmt.Errorf("%s: %w", what, err))
}

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Print writes the table, the notes and the errors.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\nportbridge bench (DESIGN §8): N=%d, mapping on %d entities, %g changes/s for %s\n\n",
		r.Config.N, r.Config.mapN(), r.Config.Rate, r.Config.Duration)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "what\tmeasured\ttarget\tresult")
	fmt.Fprintln(tw, "----\t--------\t------\t------")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", row.What, row.Measured, row.Target, row.Result)
	}
	_ = tw.Flush()
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nHow each row was measured:")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "\nMeasurements that could not be taken:")
		for _, err := range r.Errors {
			fmt.Fprintf(w, "- %v\n", err)
		}
	}
}

// rig is the shared setup: both emulators on loopback, the binary and a
// temporary directory.
type rig struct {
	cfg      Config
	progress io.Writer
	dir      string
	bin      string

	catalog    *catalogtest.Emulator
	catalogURL string
	port       *porttest.Emulator
	portURL    string
	recorder   *bulkRecorder
}

const catalogToken = "bench-catalog-token"

func (g *rig) logf(format string, args ...any) {
	fmt.Fprintf(g.progress, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Measure runs every row. progress gets a line per step.
func Measure(ctx context.Context, cfg Config, progress io.Writer) *Report {
	rep := &Report{Config: cfg}
	dir, err := os.MkdirTemp("", "portbridge-bench-")
	if err != nil {
		rep.fail("setup", fmt.Errorf("create a temporary directory: %w", err))
		return rep
	}
	g := &rig{cfg: cfg, progress: progress, dir: dir}
	if cfg.Keep {
		g.logf("keeping %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	quiet := slog.New(slog.DiscardHandler)
	g.catalog = catalogtest.New(catalogtest.Options{Token: catalogToken, Logger: quiet, Seed: 1})
	start := time.Now()
	if err := g.catalog.UpsertAll(catalogtest.Generate(cfg.N, 1)); err != nil {
		rep.fail("setup", fmt.Errorf("load %d generated entities into the catalog emulator: %w", cfg.N, err))
		return rep
	}
	g.logf("catalog emulator holds %d entities (loaded in %s)", g.catalog.Len(), time.Since(start).Round(time.Millisecond))
	csrv := httptest.NewServer(g.catalog)
	defer csrv.Close()
	g.catalogURL = csrv.URL
	g.port = porttest.New(porttest.Options{Logger: quiet})
	g.recorder = &bulkRecorder{next: g.port}
	psrv := httptest.NewServer(g.recorder)
	defer psrv.Close()
	g.portURL = psrv.URL

	measureMapping(ctx, g, rep)

	if cfg.Binary != "" {
		g.bin = cfg.Binary
	} else if g.bin, err = buildBinary(ctx, dir); err != nil {
		rep.fail("build portbridge", err)
		return rep
	}
	if measureResync(ctx, g, rep) {
		measureLatency(ctx, g, rep)
	} else {
		rep.fail("notification → Port latency", fmt.Errorf("skipped: needs the blueprints and entities of the resync rows"))
	}
	return rep
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max-1] + "…"
	}
	return s
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// count formats an integer with thousands separators.
func count(n int) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func mb(bytes int64) string { return fmt.Sprintf("%.1f MB", float64(bytes)/1e6) }

func secs(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
