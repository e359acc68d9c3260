package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/portbridge/portbridge/client"
	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/config"
	"github.com/portbridge/portbridge/sidecar/poller"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

// devGCPercent is the GC target once dev is idle: at most 20% of garbage
// on top of the live heap (both emulators' catalogs and the sidecar), so a
// 100k-entity dev stays near 300 MB. Idle, little is allocated, so the
// extra collections cost little.
const devGCPercent = 20

// runDev starts the emulated Backstage catalog with the example catalog, the
// emulated Port API and the sidecar in this one process on loopback, runs
// the initial resync, prints what landed in Port, and keeps propagating
// catalog changes (polled like the Backstage module does) until interrupted.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "sidecar listen address")
	catalogListen := fs.String("catalog-listen", "127.0.0.1:7007", "emulated Backstage catalog listen address")
	portListen := fs.String("port-listen", "127.0.0.1:5050", "emulated Port API listen address")
	examples := fs.String("catalog", "testdata/backstage-examples/all.yaml,testdata/backstage-examples/acme-corp.yaml", "comma-separated catalog YAML files to load (Location targets are followed); if missing, a synthetic catalog is generated")
	generate := fs.Int("generate", 0, "load N synthetic entities instead of the example catalog")
	statePath := fs.String("state", "", "state file (default: a new temporary file, removed at exit)")
	poll := fs.Duration("poll", time.Second, "how often the built-in poller (the Backstage module's twin) checks the catalog")
	grace := fs.Duration("delete-grace", 3*time.Second, "deletion grace period")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	mappingFile := fs.String("mapping", "", "port-app-config `FILE` to map with (default: the embedded default mapping)")
	blueprintsFile := fs.String("blueprints", "", "blueprints JSON `FILE` (default: the embedded default blueprints)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	log := newLogger(stderr, *logFormat, "info", nil)

	// The emulated Backstage catalog.
	bsToken := "dev-backstage-" + randomHex(6)
	cat := catalogtest.New(catalogtest.Options{Token: bsToken, Logger: log.With("emulator", "backstage")})
	loaded := ""
	switch {
	case *generate > 0:
		if err := cat.AddGenerated(*generate, 1); err != nil {
			return fmt.Errorf("generate catalog: %w", err)
		}
		loaded = fmt.Sprintf("%d synthetic entities", *generate)
	default:
		files := strings.Split(*examples, ",")
		if _, err := os.Stat(files[0]); err != nil {
			log.Warn("example catalog not found (run from the repository root, or pass --catalog); generating 100 synthetic entities", "catalog", *examples)
			if err := cat.UpsertAll(catalogtest.Generate(100, 1)); err != nil {
				return err
			}
			loaded = "100 synthetic entities"
		} else {
			if err := cat.LoadFiles(files...); err != nil {
				return fmt.Errorf("load %s: %w", *examples, err)
			}
			loaded = *examples
		}
	}
	catURL, stopCat, err := serveHTTP(*catalogListen, cat)
	if err != nil {
		return fmt.Errorf("catalog emulator: %w", err)
	}
	defer stopCat()

	// The emulated Port API.
	portEmu := porttest.New(porttest.Options{Logger: log.With("emulator", "port")})
	portURL, stopPort, err := serveHTTP(*portListen, portEmu)
	if err != nil {
		return fmt.Errorf("port emulator: %w", err)
	}
	defer stopPort()

	// The sidecar.
	cfg := config.Default()
	cfg.Server.Listen = freeListen(*listen)
	cfg.Mapping.File, cfg.Mapping.BlueprintsFile = *mappingFile, *blueprintsFile
	cfg.Server.Token = "dev-" + randomHex(12)
	cfg.Backstage.BaseURL, cfg.Backstage.Token = catURL, bsToken
	cfg.Port.BaseURL, cfg.Port.ClientID, cfg.Port.ClientSecret = portURL, portEmu.ClientID(), portEmu.ClientSecret()
	cfg.Sync.DeleteGracePeriod = config.Duration(*grace)
	cfg.Log.Format = *logFormat
	cfg.State.Path = *statePath
	// Steered from the emulated Port as from Port's UI: the mapping is the
	// integration's config, polled every 2 s.
	cfg.Mapping.Source = config.MappingSourcePort
	cfg.Port.Integration.PollInterval = config.Duration(2 * time.Second)
	if cfg.State.Path == "" {
		dir, err := os.MkdirTemp("", "portbridge-dev-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.State.Path = filepath.Join(dir, "state.db")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cliConfig, removeCLIConfig, err := writeDevCLIConfig(cfg)
	if err != nil {
		return err
	}
	defer removeCLIConfig()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	addrc := make(chan string, 1)
	var wg sync.WaitGroup
	var serveErr error
	wg.Go(func() {
		serveErr = serve(ctx, &cfg, log, func(addr string) { addrc <- addr })
		cancel()
	})
	defer wg.Wait()
	var addr string
	select {
	case addr = <-addrc:
	case <-ctx.Done():
		wg.Wait()
		return serveErr
	}
	sidecarURL := "http://" + addr
	cl, err := client.New(sidecarURL, cfg.Server.Token)
	if err != nil {
		return err
	}
	defer cl.Close()

	// Wait for the initial resync, then show what landed.
	start := time.Now()
	st, err := waitFirstResync(ctx, cl)
	if err != nil {
		return err
	}
	lr := st.GetLastResync()
	t := lr.GetTotals()
	fmt.Fprintf(stdout, "\nInitial resync of %s: %s in %s — %d catalog entities, %d Port entities pushed, %d failed.\n\n", loaded, lr.GetState(),
		time.Since(start).Round(time.Millisecond), t.GetSeen(), t.GetPushed(), t.GetFailed())
	printLanded(stdout, portEmu, st.GetOwnedEntities(), cat.Refs())
	self := selfCommand()
	fmt.Fprintf(stdout, `
  Sidecar (Connect, gRPC, gRPC-Web)  %s      token: %s
  Emulated Backstage catalog         %s/api/catalog   token: %s
  Emulated Port API                  %s/v1            client id/secret: %s / %s
  Metrics                            %s/metrics
  Config for the CLI (these emulators, its own state file)   %s

Try it (another terminal, same directory):
  %s status --addr %s --token %s
  curl -s -X POST %s/_emulator/entities -H 'Content-Type: application/yaml' --data-binary $'apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: hello-dev\n  description: added in dev\nspec:\n  type: service\n  lifecycle: experimental\n  owner: team-a\n'
  curl -s %s/_emulator/dump | jq '.entities.component[] | select(.identifier == "component:default/hello-dev")'
  curl -s -X DELETE %s/_emulator/entities/component/default/hello-dev
  %s sync --once --dry-run --config %s
  %s config check --config %s

Steer it from the emulated Port, as from Port's UI (the mapping is the integration's config, polled every 2s):
  curl -s %s/_emulator/integrations/portbridge | jq '.integration | {resyncStateHistory, examples: (.examples | keys)}'
  curl -s -X POST %s/_emulator/integrations/portbridge/resync      # the resync button
  curl -s %s/_emulator/integrations/portbridge | jq '.integration.config' > mapping.json   # edit it, then:
  curl -s -X PUT %s/_emulator/integrations/portbridge/config -H 'Content-Type: application/json' --data-binary @mapping.json

Changes are polled every %s (as the Backstage module does) and reach Port within about a second. Ctrl-C stops everything.
`, sidecarURL, cfg.Server.Token, catURL, bsToken, portURL, portEmu.ClientID(), portEmu.ClientSecret(), sidecarURL, cliConfig,
		self, sidecarURL, cfg.Server.Token, catURL, portURL, catURL, self, cliConfig, self, cliConfig, portURL, portURL, portURL, portURL, *poll)

	// The Backstage module's twin: poll the catalog, publish changes.
	cc, err := catalog.New(catalog.Config{BaseURL: catURL, Token: bsToken, Limits: cfg.Limits.Bounds(), Logger: log.With("component", "poller")})
	if err != nil {
		return err
	}
	// The sidecar has just resynced: the poller starts from a listing
	// (and a resync request) instead of sending the catalog again.
	p := poller.New(cc, cl, poller.Options{BatchSize: 100, Logger: log.With("component", "poller"), Source: "portbridge-dev", Baseline: true})
	if os.Getenv("GOGC") == "" {
		// Idle, the process holds both emulators' catalogs; keep the
		// garbage on top of them small (GOGC overrides).
		debug.SetGCPercent(devGCPercent)
	}
	wg.Go(func() { p.Run(ctx, *poll) })
	<-ctx.Done()
	wg.Wait()
	if serveErr != nil && !errors.Is(serveErr, context.Canceled) {
		return serveErr
	}
	return nil
}

func waitFirstResync(ctx context.Context, cl *client.Client) (*portbridgev1.GetStatusResponse, error) {
	for {
		st, err := cl.GetStatus(ctx)
		if err == nil && st.GetLastResync() != nil {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// printLanded prints what is in the emulated Port per blueprint, and
// explains the entities Port holds that the catalog does not have: empty
// placeholders Port creates for relation targets that do not exist
// (createMissingRelatedEntities, Port's default), which portbridge does
// not own and never deletes.
func printLanded(w io.Writer, emu *porttest.Emulator, owned map[string]uint64, catalogRefs []string) {
	bps := make([]string, 0, len(owned))
	for bp := range owned {
		bps = append(bps, bp)
	}
	slices.Sort(bps)
	inCatalog := map[string]bool{}
	for _, r := range catalogRefs {
		inCatalog[strings.ToLower(r)] = true
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  BLUEPRINT\tIN PORT\tOWNED BY PORTBRIDGE")
	var extra []string
	for _, bp := range bps {
		ents := emu.Entities(bp)
		fmt.Fprintf(tw, "  %s\t%d\t%d\n", bp, len(ents), owned[bp])
		if uint64(len(ents)) <= owned[bp] {
			continue
		}
		for _, e := range ents {
			if id, _ := e.Identifier.(string); !inCatalog[id] {
				extra = append(extra, placeholderNote(emu, bps, bp, id))
			}
		}
	}
	_ = tw.Flush()
	for _, n := range extra {
		fmt.Fprintln(w, n)
	}
}

// placeholderNote explains one Port entity that no catalog entity maps to.
func placeholderNote(emu *porttest.Emulator, bps []string, bp, id string) string {
	for _, src := range bps {
		for _, e := range emu.Entities(src) {
			for rel, v := range e.Relations {
				targets, _ := v.([]any)
				if v == id || slices.Contains(targets, any(id)) {
					return fmt.Sprintf("  * %s %s is not in the catalog: Port created it as an empty placeholder because %s relates to it (%s)\n"+
						"    and the mapping keeps createMissingRelatedEntities: true (Port's default). portbridge does not own it and never deletes it.\n"+
						"    `portbridge config check` lists such targets; README \"Placeholder entities\" explains this one.", bp, id, e.Identifier, rel)
				}
			}
		}
	}
	return fmt.Sprintf("  * %s %s is not in the catalog and portbridge does not own it.", bp, id)
}

// serveHTTP serves h on addr (falling back to a free port when addr is
// taken) and returns its base URL and a stop function.
func serveHTTP(addr string, h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		host, _, _ := net.SplitHostPort(addr)
		if ln, err = net.Listen("tcp", net.JoinHostPort(host, "0")); err != nil {
			return "", nil, err
		}
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// freeListen returns addr when it can be listened on, else a free port on
// the same host (so `dev` starts next to whatever holds 8080).
func freeListen(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		_ = ln.Close()
		return addr
	}
	host, _, _ := net.SplitHostPort(addr)
	if ln, err = net.Listen("tcp", net.JoinHostPort(host, "0")); err != nil {
		return addr // serve reports the error
	}
	defer ln.Close()
	return ln.Addr().String()
}

// writeDevCLIConfig writes a config file for the CLI (sync --once,
// config check, blueprints suggest) pointing at this session's emulators,
// with a state file of its own (the running sidecar holds the lock on its
// own), and returns its path and a function that removes it.
func writeDevCLIConfig(cfg config.Config) (string, func(), error) {
	dir, err := os.MkdirTemp("", "portbridge-dev-cli-")
	if err != nil {
		return "", nil, err
	}
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		a, err := filepath.Abs(p)
		if err != nil {
			return p
		}
		return a
	}
	body := fmt.Sprintf(`# Written by portbridge dev for the CLI; removed when dev stops.
server:
  listen: "127.0.0.1:0"
  token: %q
state:
  path: %q
backstage:
  baseUrl: %q
  token: %q
port:
  baseUrl: %q
  clientId: %q
  clientSecret: %q
mapping:
  file: %q
  blueprintsFile: %q
`, cfg.Server.Token, filepath.Join(dir, "cli-state.db"), cfg.Backstage.BaseURL, cfg.Backstage.Token, cfg.Port.BaseURL,
		cfg.Port.ClientID, cfg.Port.ClientSecret, abs(cfg.Mapping.File), abs(cfg.Mapping.BlueprintsFile))
	path := filepath.Join(dir, "portbridge.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	return path, func() { _ = os.RemoveAll(dir) }, nil
}

// selfCommand is how to run this binary again from the working directory:
// the path it was started with (./bin/portbridge under `make dev`), or
// `go run ./sidecar` when `go run` built it into a temporary directory.
func selfCommand() string {
	p := os.Args[0]
	if strings.Contains(p, "go-build") {
		return "go run ./sidecar"
	}
	return p
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
