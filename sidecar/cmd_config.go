package main

import (
	"context"
	"flag"
	"fmt"
	"io"
)

// runConfig implements `portbridge config check`: it validates the config
// file, the mapping and the blueprints exactly as `serve` would at start,
// without opening the state file or talking to Backstage or Port.
func runConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		return fmt.Errorf("usage: portbridge config check --config FILE")
	}
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlags(fs, stdout, "config check")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	chk, err := checkConfig(cfg) // exactly what serve checks
	if err != nil {
		return err
	}
	name := cfg.File
	if name == "" {
		name = "(environment only)"
	}
	_, err = fmt.Fprintf(stdout, "config %s is valid: %d mapping resources, %d blueprints, policy %s\n", name, len(chk.mapping.Resources), len(chk.blueprints), cfg.Sync.Policy)
	return err
}
