package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/portbridge/portbridge/sidecar/config"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/suggest"
	"github.com/portbridge/portbridge/sidecar/version"
)

// runBlueprints implements `portbridge blueprints suggest`: it maps the
// catalog (the live one, or --entities FILE) with the configured mapping
// and proposes blueprint changes that fit it, as a readable diff against
// the current blueprints (Port's when reachable, else the configured or
// default ones) or as JSON. With --apply it makes the changes that only
// add (new properties and relations, values added to existing enums) in
// Port, and checks that every blueprint still has all it had.
func runBlueprints(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "suggest" {
		return errors.New("usage: portbridge blueprints suggest [--config FILE] [--entities FILE] [--output text|json] [--apply]")
	}
	fs := flag.NewFlagSet("blueprints suggest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlags(fs, stdout, "blueprints suggest")
	entities := fs.String("entities", "", "Backstage entities `FILE` (YAML, JSON or NDJSON, like map --entities; - for stdin) instead of the live catalog")
	output := fs.String("output", "text", "`FORMAT`: text (a diff against the current blueprints) or json (the changes and, per blueprint, the PATCH body --apply sends)")
	apply := fs.Bool("apply", false, "make the changes that only add (properties, relations, enum values) in Port; never removes or narrows")
	limit := fs.Int("sample-limit", 0, "read at most `N` entities of the live catalog (0: all)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("flag --output: %q is not text or json", *output)
	}
	// Without a config file the defaults do: a file of entities and the
	// default mapping and blueprints need no daemon settings.
	def := config.Default()
	cfg := &def
	if *path != "" {
		c, err := loadConfig(*path)
		if err != nil {
			return err
		}
		cfg = c
	}
	mcfg, configured, _, err := loadMapping(cfg)
	if err != nil {
		return err
	}

	// Port for the current blueprints (required with --apply), Backstage
	// for the catalog (unless a file is given): both fail fast.
	portConfigured := cfg.Port.ClientID != "" && cfg.Port.ClientSecret != ""
	var peers []peer
	if portConfigured || *apply {
		peers = append(peers, peerPort)
	}
	if *entities == "" {
		peers = append(peers, peerBackstage)
	}
	var portDown *peerProblem
	for _, p := range peerProblems(preflight(ctx, cfg, peers...)) {
		switch {
		case p.Peer == "Backstage":
			return fmt.Errorf("reading the catalog: %w (or pass --entities FILE, e.g. testdata/backstage-examples/all.yaml)", p)
		case *apply:
			return fmt.Errorf("--apply needs Port: %w", p)
		default:
			portDown = p
			fmt.Fprintf(stderr, "warning: %v; comparing with the configured blueprints\n", p)
		}
	}
	bi, current := blueprintsThatWillExist(ctx, cfg, configured, portConfigured && portDown == nil, portDown, false)

	var src *sampleSource
	if *entities != "" {
		if src, err = fileSample(*entities); err != nil {
			return err
		}
	} else {
		src = catalogSample(ctx, cfg, *limit)
	}
	col := suggest.NewCollector(mcfg, current)
	m, err := mapping.New(mcfg, mapping.Options{AllowEnv: cfg.Mapping.AllowEnv, Timeout: cfg.Mapping.Timeout.D(), Blueprints: col.MapperBlueprints()})
	if err != nil {
		return fmt.Errorf("mapping: %w", err)
	}
	src.seq(func(e map[string]any) bool {
		col.Add(m.Map(ctx, e))
		return ctx.Err() == nil
	})
	if src.err != nil {
		return fmt.Errorf("reading the catalog: %s", scrub(src.err.Error(), cfg.Backstage.BaseURL))
	}
	plan := col.Plan()
	out := suggestReport{Catalog: src.info, Blueprints: *bi, Plan: plan.Blueprints}
	if *apply {
		out.Applied, err = applyPlan(ctx, cfg, plan)
	}
	if werr := out.write(stdout, *output); werr != nil {
		return werr
	}
	return err
}

// suggestReport is what `blueprints suggest` prints.
type suggestReport struct {
	Catalog    sampleInfo          `json:"catalog"`
	Blueprints blueprintInfo       `json:"blueprints"`
	Plan       []suggest.Blueprint `json:"plan"`
	Applied    []appliedChange     `json:"applied,omitempty"`
}

// appliedChange is the outcome of --apply for one blueprint.
type appliedChange struct {
	Blueprint string `json:"blueprint"`
	Changes   int    `json:"changes"`
	Skipped   string `json:"skipped,omitempty"`
}

// applyPlan sends each blueprint's additive changes to Port, computed
// again against the blueprint as Port has it now, and checks that the
// blueprint after keeps everything it had.
func applyPlan(ctx context.Context, cfg *config.Config, plan *suggest.Plan) ([]appliedChange, error) {
	pc, err := port.New(port.Config{BaseURL: cfg.Port.BaseURL, ClientID: cfg.Port.ClientID, ClientSecret: cfg.Port.ClientSecret,
		UserAgent: "portbridge/" + version.Version, MaxRetries: 2, HTTPClient: &http.Client{Timeout: 30 * time.Second}})
	if err != nil {
		return nil, err
	}
	var out []appliedChange
	var errs []error
	for _, bp := range plan.Blueprints {
		n := 0
		for _, ch := range bp.Changes {
			if ch.Applies {
				n++
			}
		}
		if n == 0 {
			continue
		}
		before, err := pc.GetBlueprint(ctx, bp.Identifier)
		if port.IsNotFound(err) {
			out = append(out, appliedChange{Blueprint: bp.Identifier, Skipped: "not in Port yet (serve creates it at start with mapping.initializePortResources)"})
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("blueprint %s: %w", bp.Identifier, err))
			continue
		}
		patch := suggest.Patch(*before, bp.Changes)
		if patch == nil {
			out = append(out, appliedChange{Blueprint: bp.Identifier, Skipped: "already up to date"})
			continue
		}
		after, err := pc.PatchBlueprint(ctx, bp.Identifier, patch)
		if err != nil {
			errs = append(errs, fmt.Errorf("blueprint %s: %w", bp.Identifier, err))
			continue
		}
		if err := suggest.Superset(*before, *after); err != nil {
			errs = append(errs, fmt.Errorf("blueprint %s lost something after the patch (report this): %w", bp.Identifier, err))
			continue
		}
		out = append(out, appliedChange{Blueprint: bp.Identifier, Changes: n})
	}
	return out, errors.Join(errs...)
}

func (r *suggestReport) write(w io.Writer, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(r)
	}
	fmt.Fprintf(w, "Blueprint changes that fit %s\ncompared with %s\n", r.Catalog, &r.Blueprints)
	total, applies := 0, 0
	for _, bp := range r.Plan {
		if len(bp.Changes) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n--- blueprint %s (now)\n+++ blueprint %s (fits its %d entities)\n", bp.Identifier, bp.Identifier, bp.Entities)
		for _, ch := range bp.Changes {
			total++
			tag := "proposal, not applied by --apply"
			if ch.Applies {
				applies++
				tag = "applies with --apply"
			}
			fmt.Fprintf(w, "@@ %s (%s, %s)\n", ch.Path, ch.Kind, tag)
			switch ch.Kind {
			case "unused-property", "unused-relation":
				fmt.Fprintf(w, "- %s\n", ch.Path)
			default:
				if ch.Value != nil {
					b, _ := json.Marshal(ch.Value)
					fmt.Fprintf(w, "+ %s\n", b)
				}
			}
			fmt.Fprintf(w, "  # %s\n", ch.Reason)
		}
	}
	fmt.Fprintf(w, "\n%d changes proposed; %d only add and apply with --apply (new properties and relations, values added to existing enums); the rest would narrow or remove and are left to you.\n", total, applies)
	for _, a := range r.Applied {
		if a.Skipped != "" {
			fmt.Fprintf(w, "applied: blueprint %s skipped: %s\n", a.Blueprint, a.Skipped)
			continue
		}
		fmt.Fprintf(w, "applied: blueprint %s: %d changes, checked that it kept everything it had\n", a.Blueprint, a.Changes)
	}
	if len(r.Applied) == 0 && applies > 0 {
		_, err := fmt.Fprintln(w, "Nothing was changed in Port (no --apply).")
		return err
	}
	return nil
}
