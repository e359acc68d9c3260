package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Config sets the sizes of one bench run.
type Config struct {
	N        int           // catalog entities for the resync rows
	Scale    []int         // scale mode: the catalog sizes to run the resyncs at (instead of the DESIGN table)
	Out      string        // scale mode: where the plots and the table go ("" writes none)
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
	// Scale mode: the sizes and the table with a column per size.
	ScaleSizes []int
	Scale      []ScaleRow
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
	if len(r.Config.Scale) > 0 {
		fmt.Fprintf(w, "\nportbridge bench -scale: the bridge alone (its own process) against the emulators (their own processes) at N = %s\n\n", sizesString(r.Config.Scale))
	} else {
		fmt.Fprintf(w, "\nportbridge bench (DESIGN §8): N=%d, mapping on %d entities, %g changes/s for %s\n\n",
			r.Config.N, r.Config.mapN(), r.Config.Rate, r.Config.Duration)
	}
	if len(r.Scale) > 0 {
		r.printScale(w)
	}
	if len(r.Rows) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "what\tmeasured\ttarget\tresult")
		fmt.Fprintln(tw, "----\t--------\t------\t------")
		for _, row := range r.Rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", row.What, row.Measured, row.Target, row.Result)
		}
		_ = tw.Flush()
	}
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

// rig is the shared setup of one catalog size: both emulators as their
// own processes on loopback, the binary and a temporary directory.
type rig struct {
	cfg      Config
	progress io.Writer
	dir      string
	bin      string
	n        int // entities in the catalog

	cat      *catalogPeer
	port     *portPeer
	recorder *bulkRecorder // the latency row's recorder in front of the Port emulator
	allRefs  []string      // the catalog's refs, sorted (read once)
}

// refs returns the catalog's refs, sorted; they do not change during a run.
func (g *rig) refs(ctx context.Context) ([]string, error) {
	if g.allRefs == nil {
		refs, err := g.cat.refs(ctx)
		if err != nil {
			return nil, err
		}
		if len(refs) != g.n {
			return nil, fmt.Errorf("the catalog emulator lists %d entities, want %d", len(refs), g.n)
		}
		g.allRefs = refs
	}
	return g.allRefs, nil
}

// start starts both emulators for n entities with a fresh state file path
// in a directory of its own.
func (g *rig) start(ctx context.Context, n int) error {
	g.n = n
	g.allRefs = nil
	var err error
	if g.cat, err = g.startCatalog(ctx, n); err != nil {
		return fmt.Errorf("start the catalog emulator: %w", err)
	}
	if g.port, err = g.startPort(ctx); err != nil {
		g.cat.stop()
		return fmt.Errorf("start the Port emulator: %w", err)
	}
	return nil
}

// stop stops both emulators.
func (g *rig) stop() {
	if g.cat != nil {
		g.cat.stop()
	}
	if g.port != nil {
		g.port.stop()
	}
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
	if cfg.Binary != "" {
		g.bin = cfg.Binary
	} else if g.bin, err = buildBinary(ctx, dir); err != nil {
		rep.fail("build portbridge", err)
		return rep
	}
	if len(cfg.Scale) > 0 {
		measureScale(ctx, g, rep)
		return rep
	}
	if err := g.start(ctx, cfg.N); err != nil {
		rep.fail("setup", err)
		return rep
	}
	defer g.stop()

	measureMapping(ctx, g, rep)
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

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }
