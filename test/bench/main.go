// Command bench measures portbridge against the performance targets of
// DESIGN §8 and prints one side-by-side table (what, measured, target,
// result) followed by how each row was measured. It is `make bench`.
//
// Every row uses real components: the mapping engine and the jq CLI, the
// portbridge binary (built from ./sidecar and run as a child process), and
// the catalog and Port emulators, each its own process on loopback
// (`portbridge catalog-emulator --generate N`, `portbridge port-emulator`),
// so the bridge's CPU and memory are its own. -scale runs the resyncs at
// several catalog sizes and prints their growth, with plots.
// A missed target prints MISS; the exit status is non-zero only when a
// measurement could not be taken.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run parses the flags, measures and prints; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	rep := Measure(ctx, cfg, stderr)
	rep.Print(stdout)
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := DefaultConfig()
	quick := fs.Bool("quick", false, "small run for CI smoke tests (-n 2000 -duration 2s unless given)")
	fs.IntVar(&cfg.N, "n", cfg.N, "entities in the catalog for the resync rows (and the mapping row unless -map-n)")
	fs.IntVar(&cfg.MapN, "map-n", 0, "entities for the mapping row (0: the same as -n, at most 50000)")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "changes per second published in the latency row")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long the latency row publishes")
	fs.StringVar(&cfg.JQ, "jq", cfg.JQ, "the jq command line tool")
	fs.StringVar(&cfg.Binary, "bin", "", "use this portbridge binary instead of building ./sidecar")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the temporary directory (configs, state file, child logs)")
	fs.BoolVar(&cfg.Verbose, "v", false, "copy the children's logs to stderr")
	scale := fs.String("scale", "", "scale mode: comma-separated catalog sizes (e.g. 100000,1000000) at which to measure the initial push and the unchanged resync; prints a table with a column per size and the growth")
	fs.StringVar(&cfg.Out, "out", scaleDefaultOutDir, "scale mode: directory for scale-time.svg, scale-memory.svg and scale.md (empty: write none)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return cfg, fmt.Errorf("unexpected arguments")
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["n"] {
			cfg.N = 2000
		}
		if !set["duration"] {
			cfg.Duration = 2 * time.Second
		}
	}
	if *scale != "" {
		for _, f := range strings.Split(*scale, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(strings.ReplaceAll(f, "_", "")))
			if err != nil || n < 100 {
				fmt.Fprintf(stderr, "bench: -scale %q: each size must be a number of at least 100\n", *scale)
				return cfg, fmt.Errorf("bad -scale")
			}
			cfg.Scale = append(cfg.Scale, n)
		}
		if len(cfg.Scale) < 2 || !slices.IsSorted(cfg.Scale) {
			fmt.Fprintf(stderr, "bench: -scale %q: give at least two sizes, smallest first\n", *scale)
			return cfg, fmt.Errorf("bad -scale")
		}
	}
	if cfg.N < 100 || cfg.Rate <= 0 || cfg.Duration <= 0 || cfg.MapN < 0 {
		fmt.Fprintln(stderr, "bench: -n must be at least 100; -rate and -duration positive; -map-n not negative")
		return cfg, fmt.Errorf("bad flags")
	}
	return cfg, nil
}
