package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/server"
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

// backend is the server's view of the sidecar: the engine, with GetStatus
// completed by what only the wiring knows (the Port client's pause) and
// redacted as a whole, so that no URL user info or secret reaches a
// caller whatever text an error carried.
type backend struct {
	*engine.Engine
	sc *sidecar
}

func (b backend) Status(ctx context.Context) (*portbridgev1.GetStatusResponse, error) {
	st, err := b.Engine.Status(ctx)
	if err != nil {
		return nil, errors.New(b.sc.redactor.String(err.Error()))
	}
	rl := b.sc.port.RateLimit()
	if st.PortRateLimit == nil {
		st.PortRateLimit = &portbridgev1.RateLimitStatus{Remaining: int64(rl.Remaining)}
	}
	st.PortRateLimit.Waited = durationpb.New(rl.TotalWait)
	if !rl.WaitingUntil.IsZero() {
		st.PortRateLimit.WaitingUntil = timestamppb.New(rl.WaitingUntil)
		st.PortRateLimit.WaitReason = rl.WaitReason
	}
	st.PortRateLimit.Waiting = uint32(rl.Waiting)
	st.PortRateLimit.Capped = uint64(rl.Capped)
	redactStrings(st.ProtoReflect(), b.sc.redactor)
	return st, nil
}

// redactStrings redacts every string field of m and of the messages in it.
func redactStrings(m protoreflect.Message, r *redact.Redactor) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					redactStrings(mv.Message(), r)
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := range v.List().Len() {
					redactStrings(v.List().Get(i).Message(), r)
				}
			}
		case fd.Message() != nil:
			redactStrings(v.Message(), r)
		case fd.Kind() == protoreflect.StringKind:
			if s := r.String(v.String()); s != v.String() {
				m.Set(fd, protoreflect.ValueOfString(s))
			}
		}
		return true
	})
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

// checkConfig is the one validation `serve` (through build) and `config
// check` both run, so they cannot disagree: the config's keys (config.Load
// already validated them; run again for configs built in code), the TLS
// certificate and key loaded, the mapping file loaded and every jq
// expression compiled, the blueprints file parsed, and the bounds the
// server and the catalog client get.
func checkConfig(cfg *config.Config) (*checked, error) {
	if err := cfg.Validate(); err != nil {
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

// build checks cfg (checkConfig), opens the state file and wires every part.
// Blueprint setup talks to Port; a Port that cannot be reached is logged,
// not fatal (the queue still accepts changes and the engine retries).
func build(ctx context.Context, cfg *config.Config, log *slog.Logger) (*sidecar, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	chk, err := checkConfig(cfg)
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
	instance, err := instanceID(store)
	if err != nil {
		return nil, err
	}
	pc, err := port.New(port.Config{BaseURL: cfg.Port.BaseURL, ClientID: cfg.Port.ClientID, ClientSecret: cfg.Port.ClientSecret,
		UserAgent: "portbridge/" + version.Version, InstanceID: instance, MaxConcurrency: cfg.Port.MaxConcurrency,
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
	prepare := func(ctx context.Context) (engine.Mapper, error) {
		bps, err := setupBlueprints(ctx, log, pc, blueprints, cfg.Mapping.InitializePortResources)
		if err != nil {
			return nil, err
		}
		o := mopts
		o.Blueprints = bps
		return mapping.New(mcfg, o)
	}
	eng, err := engine.New(engine.Options{
		Store: store, Catalog: cc, Port: pc, Mapper: chk.mapper, Prepare: prepare,
		CompileMapping: func(doc []byte) (engine.Mapper, error) {
			c, err := mapping.Load(doc, "mapping_yaml")
			if err == nil {
				var m *mapping.Mapper
				if m, err = mapping.New(c, mopts); err == nil {
					return m, nil
				}
			}
			// The request's mapping is the caller's mistake.
			return nil, fmt.Errorf("%w: %w", server.ErrInvalidArgument, err)
		},
		ManagedBlueprints:            mcfg.ManagedBlueprints(),
		Policy:                       engine.Policy(cfg.Sync.Policy),
		CreateMissingRelatedEntities: mcfg.CreateMissingRelatedEntities,
		MergeEntities:                mcfg.EnableMergeEntity,
		DeleteDependents:             mcfg.DeleteDependentEntities,
		DeletionThreshold:            mcfg.EntityDeletionThreshold,
		Workers:                      cfg.Sync.Workers,
		FlushInterval:                cfg.Sync.FlushInterval.D(),
		DeleteGracePeriod:            cfg.Sync.DeleteGracePeriod.D(),
		ResyncInterval:               cfg.Sync.ResyncInterval.D(),
		ResyncOnStart:                cfg.Sync.ResyncOnStart,
		VerifyInterval:               cfg.Sync.VerifyInterval.D(),
		PageSize:                     cfg.Backstage.PageSize,
		Version:                      version.Version,
		Logger:                       log,
		Registry:                     reg,
		CatalogURL:                   redact.URL(cfg.Backstage.BaseURL),
		PortURL:                      redact.URL(cfg.Port.BaseURL),
	})
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
// relations), with ours for any Port does not have.
func setupBlueprints(ctx context.Context, log *slog.Logger, pc *port.Client, bps []port.Blueprint, create bool) ([]port.Blueprint, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if create {
		created, err := mapping.EnsureBlueprints(ctx, pc, bps)
		if err != nil {
			return nil, fmt.Errorf("blueprint setup: %w", err)
		}
		if len(created) > 0 {
			log.Info("created missing blueprints in Port", "blueprints", created)
		}
	}
	out := make([]port.Blueprint, 0, len(bps))
	for _, b := range bps {
		got, err := pc.GetBlueprint(ctx, b.Identifier)
		switch {
		case err == nil:
			out = append(out, *got)
		case port.IsNotFound(err):
			log.Warn("blueprint missing in Port; entities of it will fail until it exists", "blueprint", b.Identifier)
			out = append(out, b)
		default:
			return nil, fmt.Errorf("read blueprint %s: %w", b.Identifier, err)
		}
	}
	return out, nil
}

// instanceID returns this installation's id, made once and kept in the
// state file; Port records it (in the User-Agent) as the data source.
func instanceID(store *state.Store) (string, error) {
	v, err := store.GetMeta("instance_id")
	if err != nil {
		return "", err
	}
	if len(v) > 0 {
		return string(v), nil
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	if err := store.PutMeta("instance_id", []byte(id)); err != nil {
		return "", errors.Join(fmt.Errorf("store instance id"), err)
	}
	return id, nil
}

func (s *sidecar) close() error { return s.store.Close() }
