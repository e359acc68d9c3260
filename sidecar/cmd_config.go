package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

// errInvalidConfig makes `config check` exit 1 after it printed its
// report.
var errInvalidConfig = errors.New("the config has errors (see above)")

// runConfig implements `portbridge config check`: it validates the config
// file, the mapping and the blueprints exactly as `serve` would at start,
// without opening the state file, then checks the mapping against the
// blueprints that will exist and over sample entities (configcheck.go).
func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		return fmt.Errorf("usage: portbridge config check --config FILE [--format text|json] [--offline] [--sample FILE] [--strict]")
	}
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o checkOptions
	path := configFlags(fs, stdout, "config check")
	fs.StringVar(&o.format, "format", "text", "`FORMAT` of the report: text (file:line:column: severity: message) or json (for CI)")
	fs.BoolVar(&o.offline, "offline", false, "contact neither Port nor Backstage: check against the configured or default blueprints and the example catalog")
	fs.StringVar(&o.sample, "sample", "", "Backstage entities `FILE` (YAML, JSON or NDJSON, like map --entities) to evaluate the mapping over, instead of the live catalog")
	fs.IntVar(&o.sampleLimit, "sample-limit", 10000, "read at most `N` entities of the live catalog (0: all)")
	fs.BoolVar(&o.strict, "strict", false, "fail on warnings too")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.format != "text" && o.format != "json" {
		return fmt.Errorf("flag --format: %q is not text or json", o.format)
	}
	o.configPath = *path
	rep := checkConfig(ctx, o)
	if err := rep.write(stdout, o.format); err != nil {
		return err
	}
	if !rep.Valid {
		return errInvalidConfig
	}
	return nil
}
