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

	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

// runPortEmulator serves the Port API emulator until ctx is done
// (`portbridge port-emulator`). With --persist it loads the file at start
// and saves changes every two seconds and on shutdown.
func runPortEmulator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("port-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:5050", "address to listen on")
	clientID := fs.String("client-id", porttest.DefaultClientID, "client id the emulator accepts")
	clientSecret := fs.String("client-secret", porttest.DefaultClientSecret, "client secret the emulator accepts")
	persist := fs.String("persist", "", "JSON file to load at start and save changes to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("port-emulator: unexpected arguments %v", fs.Args())
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	emu, err := porttest.Open(porttest.Options{ClientID: *clientID, ClientSecret: *clientSecret, PersistFile: *persist, Logger: log})
	if err != nil {
		return fmt.Errorf("port-emulator: %w", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("port-emulator: listening on %s: %w", *listen, err)
	}
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "Port API emulator on http://%s (client id %q)\n", ln.Addr(), *clientID)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("port-emulator: serving: %w", err)
		case <-tick.C:
			if err := emu.Save(); err != nil {
				log.Error("saving the emulator state", "err", err)
			}
		case <-ctx.Done():
			shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := srv.Shutdown(shutCtx)
			if serr := emu.Save(); serr != nil {
				err = errors.Join(err, serr)
			}
			if err != nil {
				return fmt.Errorf("port-emulator: shutting down: %w", err)
			}
			return nil
		}
	}
}
