package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/portbridge/portbridge/sidecar/mapping"
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
	mcfg, blueprints, _, err := loadMapping(cfg)
	if err != nil {
		return err
	}
	if _, err := mapping.New(mcfg, mapping.Options{AllowEnv: cfg.Mapping.AllowEnv, Timeout: cfg.Mapping.Timeout.D(), Blueprints: blueprints}); err != nil {
		return fmt.Errorf("mapping: %w", err)
	}
	name := cfg.File
	if name == "" {
		name = "(environment only)"
	}
	_, err = fmt.Fprintf(stdout, "config %s is valid: %d mapping resources, %d blueprints, policy %s\n", name, len(mcfg.Resources), len(blueprints), cfg.Sync.Policy)
	return err
}
