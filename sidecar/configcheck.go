package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/portbridge/portbridge/sidecar/config"
	"github.com/portbridge/portbridge/sidecar/mapcheck"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/version"
)

// checkOptions are the flags of `portbridge config check`.
type checkOptions struct {
	configPath  string
	format      string // text or json
	offline     bool   // contact neither Port nor Backstage
	sample      string // entities file instead of the live catalog
	sampleLimit int
	strict      bool // warnings fail too
}

// blueprintInfo says which blueprints the mapping was checked against.
type blueprintInfo struct {
	// Source is "port" (Port's, plus configured ones created at start),
	// "file" (mapping.blueprintsFile) or "defaults" (embedded).
	Source string   `json:"source"`
	Detail string   `json:"detail"`
	Names  []string `json:"names"`
	Note   string   `json:"note,omitempty"`
}

// checkReport is the outcome of `portbridge config check`.
type checkReport struct {
	Config     string             `json:"config"`
	Mapping    string             `json:"mapping"`
	Valid      bool               `json:"valid"`
	Errors     int                `json:"errors"`
	Warnings   int                `json:"warnings"`
	Resources  int                `json:"resources"`
	Policy     string             `json:"policy,omitempty"`
	Blueprints *blueprintInfo     `json:"blueprints,omitempty"`
	Sample     *sampleInfo        `json:"sample,omitempty"`
	Peers      []*peerProblem     `json:"peers,omitempty"`
	Problems   []mapcheck.Problem `json:"problems"`
}

func (r *checkReport) add(p mapcheck.Problem) { r.Problems = append(r.Problems, p) }

// checkConfig runs `config check`: the validation `serve` does at start
// (config, mapping, blueprints), then the mapping against the blueprints
// that will exist — Port's when Port is reachable with the configured
// credentials, else the configured or default ones — and evaluated over a
// sample: the live catalog when reachable, else the example catalog in
// testdata (or --sample FILE).
func checkConfig(ctx context.Context, o checkOptions) *checkReport {
	rep := &checkReport{Config: o.configPath, Mapping: "(embedded default)", Problems: []mapcheck.Problem{}}
	if rep.Config == "" {
		rep.Config = "(environment only)"
	}
	defer rep.finish(o.strict)
	cfg, err := loadConfig(o.configPath)
	if err != nil {
		rep.configErrors(err)
		return rep
	}
	rep.Policy = cfg.Sync.Policy
	if cfg.Mapping.File != "" {
		rep.Mapping = cfg.Mapping.File
	}
	mcfg, blueprints, _, err := loadMapping(cfg)
	if err != nil {
		rep.mappingErrors(err, cfg)
		return rep
	}
	rep.Resources = len(mcfg.Resources)
	// Exactly the checks serve runs before it starts; what they refuse
	// beyond the mapping (credentials, TLS files) is reported, and the
	// mapping is still checked below.
	chk, compileErr := validateConfig(cfg)
	var mce *mapping.ConfigError
	var mces mapping.ConfigErrors
	if compileErr != nil && !errors.As(compileErr, &mce) && !errors.As(compileErr, &mces) {
		rep.configErrors(compileErr)
		if _, err := mapping.New(mcfg, mapping.Options{AllowEnv: cfg.Mapping.AllowEnv, Blueprints: blueprints}); err != nil {
			compileErr = err
			rep.mappingErrors(err, cfg)
		} else {
			compileErr = nil
		}
	} else if compileErr != nil {
		rep.mappingErrors(compileErr, cfg)
	}
	mopts := mapping.Options{AllowEnv: cfg.Mapping.AllowEnv, Timeout: cfg.Mapping.Timeout.D(), MaxOutputBytes: cfg.Mapping.MaxOutputBytes,
		MemoryBudget: cfg.Mapping.MemoryBudget, Blueprints: blueprints}
	if chk != nil {
		mopts = chk.mopts
	}

	// The peers: Port for its blueprints (when credentials are set),
	// Backstage for a sample (unless a file is given).
	var peers []peer
	portConfigured := cfg.Port.ClientID != "" && cfg.Port.ClientSecret != ""
	if !o.offline && portConfigured {
		peers = append(peers, peerPort)
	}
	if !o.offline && o.sample == "" {
		peers = append(peers, peerBackstage)
	}
	down := map[peer]*peerProblem{}
	if len(peers) > 0 {
		for _, p := range peerProblems(preflight(ctx, cfg, peers...)) {
			rep.Peers = append(rep.Peers, p)
			key := peerBackstage
			if p.Peer == "Port" {
				key = peerPort
			}
			down[key] = p
			sev := mapcheck.Warning
			if p.Auth {
				sev = mapcheck.Error // configured credentials that do not work
			}
			rep.add(mapcheck.Problem{File: rep.Config, Severity: sev, Key: strings.Join(p.Keys, ", "), Message: p.Error()})
		}
	}

	bi, will := blueprintsThatWillExist(ctx, cfg, blueprints, portConfigured && !o.offline && down[peerPort] == nil, down[peerPort], o.offline)
	rep.Blueprints = bi

	var src *sampleSource
	switch {
	case o.sample != "":
		if src, err = fileSample(o.sample); err != nil {
			rep.add(mapcheck.Problem{File: o.sample, Severity: mapcheck.Error, Key: "--sample", Message: err.Error()})
		}
	case !o.offline && down[peerBackstage] == nil:
		src = catalogSample(ctx, cfg, o.sampleLimit)
	}
	if src == nil && o.sample == "" {
		src = exampleSample()
	}
	if compileErr != nil {
		// The mapping does not compile: only the static checks run.
		src = nil
	}
	in := mapcheck.Input{Config: mcfg, Blueprints: will, BlueprintSource: bi.String(), Options: mopts}
	if src != nil {
		in.Sample = src.seq
	}
	res := mapcheck.Check(ctx, in)
	for _, p := range res.Problems {
		rep.add(p)
	}
	switch {
	case src != nil:
		info := src.info
		if src.err != nil {
			info.Note = strings.TrimPrefix(info.Note+"; reading stopped: "+scrub(src.err.Error(), cfg.Backstage.BaseURL), "; ")
			rep.add(mapcheck.Problem{File: rep.Config, Severity: mapcheck.Warning, Key: "backstage.baseUrl", Message: "reading the catalog for a sample failed: " + scrub(src.err.Error(), cfg.Backstage.BaseURL)})
		}
		rep.Sample = &info
	case compileErr != nil:
		rep.Sample = &sampleInfo{Source: "none", Note: "the mapping does not compile"}
	default:
		rep.Sample = &sampleInfo{Source: "none", Note: "Backstage not reachable and no example catalog found; pass --sample FILE to check values"}
	}
	return rep
}

// blueprintsThatWillExist returns the blueprints the mapping will meet:
// Port's (listed with the configured credentials) plus, when
// mapping.initializePortResources is on, the configured ones Port lacks
// (created at start); without Port, the configured or default ones.
func blueprintsThatWillExist(ctx context.Context, cfg *config.Config, configured []port.Blueprint, usePort bool, portDown *peerProblem, offline bool) (*blueprintInfo, []port.Blueprint) {
	local := &blueprintInfo{Source: "defaults", Detail: "the embedded default blueprints"}
	if cfg.Mapping.BlueprintsFile != "" {
		local.Source, local.Detail = "file", "mapping.blueprintsFile "+cfg.Mapping.BlueprintsFile
	}
	names := func(bps []port.Blueprint) []string {
		var out []string
		for _, b := range bps {
			out = append(out, b.Identifier)
		}
		slices.Sort(out)
		return out
	}
	switch {
	case offline:
		local.Note = "Port not contacted (--offline)"
	case portDown != nil:
		local.Note = "Port not usable: " + portDown.Cause
	case !usePort:
		local.Note = "Port not contacted: no credentials configured (port.clientId, port.clientSecret)"
	}
	if !usePort {
		local.Names = names(configured)
		return local, configured
	}
	ctx, cancel := context.WithTimeout(ctx, 2*preflightTimeout)
	defer cancel()
	pc, err := port.New(port.Config{BaseURL: cfg.Port.BaseURL, ClientID: cfg.Port.ClientID, ClientSecret: cfg.Port.ClientSecret,
		UserAgent: "portbridge/" + version.Version, MaxRetries: 1, HTTPClient: &http.Client{Timeout: 2 * preflightTimeout}})
	var inPort []port.Blueprint
	if err == nil {
		inPort, err = pc.ListBlueprints(ctx)
	}
	if err != nil {
		local.Note = "listing Port's blueprints failed: " + scrub(err.Error(), cfg.Port.BaseURL)
		local.Names = names(configured)
		return local, configured
	}
	will := slices.Clone(inPort)
	have := map[string]bool{}
	for _, b := range inPort {
		have[b.Identifier] = true
	}
	var created []string
	for _, b := range configured {
		if !have[b.Identifier] && cfg.Mapping.InitializePortResources {
			will = append(will, b)
			created = append(created, b.Identifier)
		}
	}
	bi := &blueprintInfo{Source: "port", Detail: "Port at " + redactURL(cfg.Port.BaseURL), Names: names(will)}
	if len(created) > 0 {
		bi.Note = fmt.Sprintf("%s created at start from %s", strings.Join(created, ", "), local.Detail)
	}
	return bi, will
}

func (b *blueprintInfo) String() string {
	s := b.Detail
	if b.Note != "" {
		s += " (" + b.Note + ")"
	}
	return s
}

// configLine finds "line N:" in the config loader's messages.
var configLine = regexp.MustCompile(`(?:^|: )line (\d+): `)

// configErrors turns the config loader's error (one line per problem) into
// problems of the config file.
func (r *checkReport) configErrors(err error) {
	for _, msg := range strings.Split(err.Error(), "\n") {
		p := mapcheck.Problem{File: r.Config, Severity: mapcheck.Error, Message: strings.TrimPrefix(msg, "config "+r.Config+": ")}
		if m := configLine.FindStringSubmatchIndex(p.Message); m != nil {
			p.Line, _ = strconv.Atoi(p.Message[m[2]:m[3]])
			p.Message = p.Message[:m[0]] + strings.TrimPrefix(p.Message[m[0]:], p.Message[m[0]:m[1]])
			p.Message = strings.TrimPrefix(p.Message, ": ")
		}
		r.add(p)
	}
}

// mappingErrors turns mapping problems (with positions) and file errors
// into problems.
func (r *checkReport) mappingErrors(err error, cfg *config.Config) {
	var list mapping.ConfigErrors
	var one *mapping.ConfigError
	switch {
	case errors.As(err, &list):
	case errors.As(err, &one):
		list = mapping.ConfigErrors{one}
	default:
		r.add(mapcheck.Problem{File: r.Config, Severity: mapcheck.Error, Message: err.Error()})
		return
	}
	for _, e := range list {
		r.add(mapcheck.Problem{File: e.File, Line: e.Line, Column: e.Column, Key: e.Key, Severity: mapcheck.Error, Message: e.Msg})
	}
}

// finish counts, orders and decides validity.
func (r *checkReport) finish(strict bool) {
	slices.SortStableFunc(r.Problems, func(a, b mapcheck.Problem) int {
		if a.File != b.File {
			return strings.Compare(a.File, b.File)
		}
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	r.Errors, r.Warnings = 0, 0
	for _, p := range r.Problems {
		if p.Severity == mapcheck.Error {
			r.Errors++
		} else {
			r.Warnings++
		}
	}
	r.Valid = r.Errors == 0 && (!strict || r.Warnings == 0)
}

// write prints the report as text (problems one per line, like a compiler,
// then a summary) or as one JSON object.
func (r *checkReport) write(w io.Writer, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	for _, p := range r.Problems {
		fmt.Fprintln(w, p.String())
	}
	if r.Blueprints != nil {
		fmt.Fprintf(w, "blueprints: %s\n", r.Blueprints)
	}
	if r.Sample != nil {
		fmt.Fprintf(w, "sample: %s\n", r.Sample)
	}
	if r.Valid {
		_, err := fmt.Fprintf(w, "config %s is valid: %d mapping resources, %d blueprints, policy %s%s\n", r.Config, r.Resources,
			len(r.blueprintNames()), r.Policy, plural(r.Warnings, ", %d warning"))
		return err
	}
	_, err := fmt.Fprintf(w, "config %s: %d errors, %d warnings\n", r.Config, r.Errors, r.Warnings)
	return err
}

func (r *checkReport) blueprintNames() []string {
	if r.Blueprints == nil {
		return nil
	}
	return r.Blueprints.Names
}

func plural(n int, format string) string {
	if n == 0 {
		return ""
	}
	s := fmt.Sprintf(format, n)
	if n != 1 {
		s += "s"
	}
	return s
}
