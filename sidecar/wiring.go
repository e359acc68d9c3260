package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/config"
	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/limits"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/redact"
	"github.com/portbridge/portbridge/sidecar/state"
	"github.com/portbridge/portbridge/sidecar/version"
)

// sidecar is the wired product: state, clients, mapping and engine.
type sidecar struct {
	cfg      *config.Config
	log      *slog.Logger
	registry *prometheus.Registry
	store    *state.Store
	port     *port.Client
	catalog  *catalog.Client
	engine   *engine.Engine
	limits   limits.Limits
	redactor *redact.Redactor
}

// checked is a config that passed every check `serve` makes before it
// opens the state file or talks to anyone.
type checked struct {
	mapping    *mapping.Config
	blueprints []port.Blueprint
	mopts      mapping.Options
	mapper     *mapping.Mapper
	limits     limits.Limits
}

// validateConfig is the one validation `serve` (through build) and `config
// check` both run, so they cannot disagree: the config's keys (config.Load
// already validated them; run again for configs built in code), the TLS
// certificate and key loaded, the mapping file loaded and every jq
// expression compiled, the blueprints file parsed, and the bounds the
// server and the catalog client get.
func validateConfig(cfg *config.Config) (*checked, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.CheckCredentials(); err != nil {
		return nil, err
	}
	if cfg.Server.TLS.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile); err != nil {
			return nil, fmt.Errorf("key server.tls: load certificate %s and key %s: %w", cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile, err)
		}
	}
	mcfg, blueprints, err := loadMapping(cfg)
	if err != nil {
		return nil, err
	}
	mopts := mapping.Options{AllowEnv: cfg.Mapping.AllowEnv, Timeout: cfg.Mapping.Timeout.D(), MaxOutputBytes: cfg.Mapping.MaxOutputBytes,
		MemoryBudget: cfg.Mapping.MemoryBudget, Blueprints: blueprints}
	mapper, err := mapping.New(mcfg, mopts)
	if err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	return &checked{mapping: mcfg, blueprints: blueprints, mopts: mopts, mapper: mapper, limits: cfg.Limits.Bounds().WithDefaults()}, nil
}

// build checks cfg (validateConfig), opens the state file and wires every
// part. Blueprint setup talks to Port; a Port that cannot be reached is
// logged, not fatal (the queue still accepts changes and the engine
// retries).
func build(ctx context.Context, cfg *config.Config, log *slog.Logger, tune ...func(*engine.Options)) (*sidecar, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	chk, err := validateConfig(cfg)
	if err != nil {
		return nil, err
	}
	mcfg, blueprints, mopts := chk.mapping, chk.blueprints, chk.mopts
	store, err := state.Open(cfg.State.Path, state.Options{})
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = store.Close()
		}
	}()
	pc, err := port.New(port.Config{BaseURL: cfg.Port.BaseURL, ClientID: cfg.Port.ClientID, ClientSecret: cfg.Port.ClientSecret,
		Version: version.Version, IntegrationIdentifier: cfg.Port.Integration.Identifier, MaxConcurrency: cfg.Port.MaxConcurrency,
		RequestsPerSecond: cfg.Port.RequestsPerSecond, MaxRetryAfter: cfg.Port.MaxRetryAfter.D(), Logger: log.With("peer", "port"), Metrics: reg})
	if err != nil {
		return nil, fmt.Errorf("key port: %w", err)
	}
	cc, err := catalog.New(catalog.Config{BaseURL: cfg.Backstage.BaseURL, Token: cfg.Backstage.Token, PageSize: cfg.Backstage.PageSize,
		Logger: log.With("peer", "backstage"), Metrics: reg, Limits: chk.limits})
	if err != nil {
		return nil, fmt.Errorf("key backstage: %w", err)
	}
	// Blueprint setup needs Port; it runs when the engine starts, retried
	// until Port answers, so a Port outage never stops the sidecar from
	// accepting (and durably queueing) changes.
	prepare := func(ctx context.Context, dryRun bool) (engine.Mapper, []string, error) {
		bps, toCreate, err := setupBlueprints(ctx, log, pc, blueprints, cfg.Mapping.InitializePortResources, dryRun)
		if err != nil {
			return nil, nil, err
		}
		o := mopts
		o.Blueprints = bps
		m, err := mapping.New(mcfg, o)
		return m, toCreate, err
	}
	eopts := engine.Options{
		Store: store, Catalog: cc, Port: pc, Mapper: chk.mapper, Prepare: prepare,
		CompileMapping: func(doc []byte) (engine.Mapper, error) {
			c, err := mapping.Load(doc, "mapping_yaml")
			if err != nil {
				return nil, err
			}
			return mapping.New(c, mopts)
		},
		ManagedBlueprints:            mcfg.ManagedBlueprints(),
		Policy:                       cfg.Sync.Policy,
		CreateMissingRelatedEntities: mcfg.CreateMissingRelatedEntities,
		MergeEntities:                mcfg.EnableMergeEntity,
		DeleteDependents:             mcfg.DeleteDependentEntities,
		DeletionThreshold:            mcfg.EntityDeletionThreshold,
		Workers:                      cfg.Sync.Workers,
		FlushInterval:                cfg.Sync.FlushInterval.D(),
		DeleteGracePeriod:            cfg.Sync.DeleteGracePeriod.D(),
		DeletionWindow:               cfg.Sync.DeletionWindow.D(),
		ResyncInterval:               cfg.Sync.ResyncInterval.D(),
		ResyncOnStart:                cfg.Sync.ResyncOnStart,
		VerifyInterval:               cfg.Sync.VerifyInterval.D(),
		PageSize:                     cfg.Backstage.PageSize,
		Version:                      version.Version,
		Logger:                       log,
		Registry:                     reg,
		CatalogURL:                   redact.URL(cfg.Backstage.BaseURL),
		PortURL:                      redact.URL(cfg.Port.BaseURL),
	}
	for _, t := range tune {
		t(&eopts)
	}
	eng, err := engine.New(eopts)
	if err != nil {
		return nil, err
	}
	ok = true
	return &sidecar{cfg: cfg, log: log, registry: reg, store: store, port: pc, catalog: cc, engine: eng, limits: chk.limits,
		redactor: redact.New(cfg.Secrets())}, nil
}

// loadMapping reads the mapping and blueprint files, or the embedded
// defaults.
func loadMapping(cfg *config.Config) (*mapping.Config, []port.Blueprint, error) {
	mcfg := mapping.DefaultConfig()
	if cfg.Mapping.File != "" {
		data, err := os.ReadFile(cfg.Mapping.File)
		if err != nil {
			return nil, nil, fmt.Errorf("key mapping.file: %w", err)
		}
		if mcfg, err = mapping.Load(data, cfg.Mapping.File); err != nil {
			return nil, nil, fmt.Errorf("key mapping.file: %w", err)
		}
	}
	blueprints := mapping.DefaultBlueprints()
	if cfg.Mapping.BlueprintsFile != "" {
		data, err := os.ReadFile(cfg.Mapping.BlueprintsFile)
		if err != nil {
			return nil, nil, fmt.Errorf("key mapping.blueprintsFile: %w", err)
		}
		blueprints = nil
		if err := json.Unmarshal(data, &blueprints); err != nil {
			return nil, nil, fmt.Errorf("key mapping.blueprintsFile: %s: %w", cfg.Mapping.BlueprintsFile, err)
		}
	}
	return mcfg, blueprints, nil
}

// setupBlueprints creates missing blueprints (when create is set) and
// returns the blueprints as Port has them (a user may have changed
// relations), with ours for any Port does not have. With dryRun it creates
// nothing and returns the blueprints it would create.
func setupBlueprints(ctx context.Context, log *slog.Logger, pc *port.Client, bps []port.Blueprint, create, dryRun bool) ([]port.Blueprint, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if create && !dryRun {
		created, err := mapping.EnsureBlueprints(ctx, pc, bps)
		if err != nil {
			return nil, nil, fmt.Errorf("blueprint setup: %w", err)
		}
		if len(created) > 0 {
			log.Info("created missing blueprints in Port", "blueprints", created)
		}
	}
	out := make([]port.Blueprint, 0, len(bps))
	var toCreate []string
	for _, b := range bps {
		got, err := pc.GetBlueprint(ctx, b.Identifier)
		switch {
		case err == nil:
			out = append(out, *got)
		case port.IsNotFound(err) && create && dryRun:
			toCreate = append(toCreate, b.Identifier)
			out = append(out, b)
		case port.IsNotFound(err):
			log.Warn("blueprint missing in Port and mapping.initializePortResources is off; entities of it fail until it exists", "blueprint", b.Identifier)
			out = append(out, b)
		default:
			return nil, nil, fmt.Errorf("read blueprint %s: %w", b.Identifier, err)
		}
	}
	return out, toCreate, nil
}

func (s *sidecar) close() error { return s.store.Close() }
