// Command portbridge is the Backstage → Port bridge: a sidecar that keeps
// Port's software catalog in sync with Backstage's catalog in near real time.
//
// Subcommands: serve, sync, status, resync, map, dev, version, port-emulator,
// catalog-emulator. Run `portbridge help` for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/portbridge/portbridge/sidecar/version"
)

type command struct {
	name, usage string
	run         func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the sidecar: the Connect/gRPC API, the change path, resyncs and verify passes", runServe},
		{"sync", "run one resync and exit (--once; --dry-run prints the plan and writes nothing)", runSync},
		{"status", "print the status of a running sidecar (GetStatus)", runStatus},
		{"resync", "ask a running sidecar for a resync; --wait follows it and exits as sync --once does (a scheduled resync beside the daemon)", runResync},
		{"map", "map Backstage entities with a port-app-config and print the Port entities (jq playground)", runMap},
		{"dev", "run the whole flow on this machine: emulated Backstage and Port, example catalog, no accounts", runDev},
		{"config", "validate a config file and its mapping without starting (config check --config FILE)", runConfig},
		{"blueprints", "propose blueprint changes that fit the catalog (blueprints suggest [--apply])", runBlueprints},
		{"version", "print the version and commit", runVersion},
		{"port-emulator", "serve the strict Port API emulator", runPortEmulator},
		{"catalog-emulator", "serve the Backstage catalog API emulator", runCatalogEmulator},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			var xe *exitError
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.As(err, &xe):
				fmt.Fprintf(stderr, "portbridge %s: %v\n", c.name, err)
				return xe.code
			default:
				fmt.Fprintf(stderr, "portbridge %s: %v\n", c.name, err)
				return 1
			}
		}
	}
	fmt.Fprintf(stderr, "portbridge: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "portbridge %s — keeps Port's catalog in sync with Backstage's\n\nUsage: portbridge <command> [flags]\n\nCommands:\n", version.String())
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-17s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(w, "\nRun 'portbridge <command> --help' for a command's flags.")
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	_, err := fmt.Fprintf(stdout, "portbridge %s\n", version.String())
	return err
}
