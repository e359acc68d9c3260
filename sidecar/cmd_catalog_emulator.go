package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
)

// runCatalogEmulator serves an emulated Backstage catalog API until ctx is
// done: `portbridge catalog-emulator [--listen addr] [--token t]
// [--load FILE]... [--generate N] [--seed S]`. Entities can be added and
// deleted with curl on /_emulator/entities.
func runCatalogEmulator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("catalog-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:7007", "address to serve the catalog API on")
	token := fs.String("token", "", "static token clients must send as Authorization: Bearer (empty: no auth)")
	var loads []string
	fs.Func("load", "catalog YAML file to load, following Location targets (repeatable)", func(s string) error {
		loads = append(loads, s)
		return nil
	})
	generate := fs.Int("generate", 0, "number of synthetic entities to add (rendered from their index when read, so a million cost no JSON in memory)")
	seed := fs.Int64("seed", 1, "seed of the synthetic catalog")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("catalog-emulator: unexpected arguments %q", fs.Args())
	}
	if *generate < 0 {
		return fmt.Errorf("catalog-emulator: --generate %d: must not be negative", *generate)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	emu := catalogtest.New(catalogtest.Options{Token: *token, Logger: log})
	if len(loads) > 0 {
		if err := emu.LoadFiles(loads...); err != nil {
			return fmt.Errorf("catalog-emulator: load %v: %w", loads, err)
		}
	}
	if *generate > 0 {
		if err := emu.AddGenerated(*generate, *seed); err != nil {
			return fmt.Errorf("catalog-emulator: generate %d entities: %w", *generate, err)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("catalog-emulator: listen on %s: %w", *listen, err)
	}
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "catalog emulator serving %d entities on http://%s/api/catalog (admin: /_emulator/entities)\n", emu.Len(), ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("catalog-emulator: serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("catalog-emulator: shut down: %w", err)
	}
	return nil
}
