package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"text/tabwriter"

	"github.com/portbridge/portbridge/server"
	"github.com/portbridge/portbridge/sidecar/config"
	"github.com/portbridge/portbridge/sidecar/redact"
	"github.com/portbridge/portbridge/sidecar/version"
)

// configFlags registers --config and prints the config reference in the
// command's help.
func configFlags(fs *flag.FlagSet, out io.Writer, what string) *string {
	path := fs.String("config", os.Getenv("PORTBRIDGE_CONFIG"), "config `FILE` (YAML); env PORTBRIDGE_CONFIG")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: portbridge %s [flags]\n\nFlags:\n", what)
		fs.PrintDefaults()
		fmt.Fprintf(out, "\nConfig keys (file key, environment override, default):\n")
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		def := config.Default()
		for _, f := range config.Fields(&def) {
			d := f.Default
			if f.Secret {
				d = "(secret)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", f.Key, f.Env, d, f.Desc)
		}
		_ = tw.Flush()
		fmt.Fprintln(out, "\nValues may use ${VAR} and ${VAR:-default}; environment overrides win over the file.")
	}
	return path
}

func loadConfig(path string) (*config.Config, error) {
	return config.Load(path, os.Getenv)
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlags(fs, stdout, "serve")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log.Format, cfg.Log.Level, cfg.Secrets())
	logPreflight(ctx, cfg, log)
	return serve(ctx, cfg, log, nil)
}

// serve runs the sidecar until ctx ends. ready, if not nil, is called with
// the listener's address once it accepts connections.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, ready func(addr string)) error {
	sc, err := build(ctx, cfg, log, buildOptions{})
	if err != nil {
		return err
	}
	defer sc.close()
	srv, err := server.New(server.Config{Token: cfg.Server.Token, AllowNoAuth: cfg.Server.AllowNoAuth, MaxRequestBytes: cfg.Server.MaxRequestBytes,
		Limits: sc.limits, Version: version.Version, Logger: log, Registry: sc.registry}, backend{eng: sc.engine, sc: sc, integ: sc.integ})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("key server.listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var engineErr error
	// The integration loop stops after the engine, so the end of a resync
	// cut short by the shutdown still reaches Port.
	ictx, stopInteg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopInteg()
	wg.Go(func() {
		engineErr = sc.engine.Run(ctx)
		cancel()
		stopInteg()
	})
	if sc.integ != nil {
		wg.Go(func() { sc.integ.Run(ictx) })
	}
	log.Info("portbridge serving", "listen", ln.Addr().String(), "version", version.String(), "state", cfg.State.Path,
		"backstage", redact.URL(cfg.Backstage.BaseURL), "port", redact.URL(cfg.Port.BaseURL), "policy", cfg.Sync.Policy, "tls", cfg.Server.TLS.CertFile != "")
	if ready != nil {
		ready(ln.Addr().String())
	}
	err = srv.Serve(ctx, ln, cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile)
	cancel()
	wg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("serve %s: %w", cfg.Server.Listen, err)
	}
	if engineErr != nil {
		return engineErr
	}
	log.Info("portbridge stopped")
	return nil
}
