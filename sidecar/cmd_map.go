package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/portbridge/portbridge/sidecar/config"
	"github.com/portbridge/portbridge/sidecar/limits"
	"github.com/portbridge/portbridge/sidecar/mapping"
)

// runMap implements `portbridge map`, the mapping playground:
//
//	portbridge map [--config MAPPING] --entities FILE [--output yaml|json|ndjson] [--keep-going]
//	portbridge map [--config MAPPING] --bench FILE      print entities per second (NDJSON input)
//
// Without --config the embedded default mapping is used. Only mapped Port
// entities go to stdout (so the output pipes into jq or yq); warnings,
// skipped entities and the summary go to stderr. An entity that fails to map
// (skipped: no identifier or blueprint, an invalid identifier, a jq error
// or timeout) stops the command with exit status 1 after the entities
// mapped before it; with --keep-going every entity is mapped, every failure
// reported, and the exit status is still 1 at the end.
func runMap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("map", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "port-app-config `FILE` (YAML, Port's format); default: the embedded default mapping")
	entitiesPath := fs.String("entities", "", "Backstage entities `FILE`: YAML (one or many documents), JSON (object or array) or NDJSON; - for stdin")
	output := fs.String("output", "yaml", "`FORMAT` of the Port entities on stdout: yaml (documents, for reading), json (one array) or ndjson (one entity per line, for jq)")
	keepGoing := fs.Bool("keep-going", false, "map every entity even after one fails; the exit status is still 1 if any failed")
	benchPath := fs.String("bench", "", "measure throughput over an NDJSON `FILE` of Backstage entities")
	compareJQ := fs.String("jq", "", "with --bench, also run the jq CLI at `PATH` (e.g. jq) over the same file with the same mapping")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "with --bench, goroutines mapping in parallel")
	blueprintsPath := fs.String("blueprints", "", "blueprints JSON `FILE` (an array) deciding many-relations and object properties; default: the embedded default blueprints")
	allowEnv := fs.Bool("allow-env", false, "let jq read environment variables ($ENV, env)")
	def := config.Default()
	budget := fs.Int64("memory-budget", def.Mapping.MemoryBudget, "memory jq may use per entity, in `bytes` (as mapping.memoryBudget)")
	maxOut := fs.Int("max-output-bytes", def.Mapping.MaxOutputBytes, "largest mapped Port entity as JSON, in `bytes` (as mapping.maxOutputBytes)")
	timeout := fs.Duration("timeout", def.Mapping.Timeout.D(), "jq time limit per entity (as mapping.timeout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("map: unexpected argument %q", fs.Arg(0))
	}
	if (*entitiesPath == "") == (*benchPath == "") {
		return errors.New("map: give exactly one of --entities FILE or --bench FILE")
	}
	enc, err := newEntityEncoder(*output, stdout)
	if err != nil {
		return fmt.Errorf("flag --output: %w", err)
	}
	opts := mapping.Options{AllowEnv: *allowEnv, MemoryBudget: *budget, MaxOutputBytes: *maxOut, Timeout: *timeout}
	m, err := buildMapper(*configPath, *blueprintsPath, opts)
	if err != nil {
		return err
	}
	if *benchPath != "" {
		return benchMap(ctx, m, *benchPath, *compareJQ, *workers, stdout)
	}
	data, err := readInput(*entitiesPath)
	if err != nil {
		return err
	}
	entities, err := mapping.ReadEntities(data)
	if err != nil {
		return fmt.Errorf("map: reading entities from %s: %w", *entitiesPath, err)
	}
	return printMapped(ctx, m, entities, def.Limits.Bounds(), enc, stderr, *keepGoing)
}

func buildMapper(configPath, blueprintsPath string, opts mapping.Options) (*mapping.Mapper, error) {
	cfg := mapping.DefaultConfig()
	if configPath != "" {
		data, err := os.ReadFile(configPath)
		if err != nil {
			return nil, fmt.Errorf("map: reading the mapping: %w", err)
		}
		if cfg, err = mapping.Load(data, configPath); err != nil {
			return nil, err
		}
	}
	if blueprintsPath != "" {
		data, err := os.ReadFile(blueprintsPath)
		if err != nil {
			return nil, fmt.Errorf("map: reading blueprints: %w", err)
		}
		if err := json.Unmarshal(data, &opts.Blueprints); err != nil {
			return nil, fmt.Errorf("map: decoding blueprints %s: %w", blueprintsPath, err)
		}
	}
	return mapping.New(cfg, opts)
}

func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("map: %w", err)
	}
	return data, nil
}

// printMapped maps every entity, writes the Port entities with enc and the
// warnings, failures and a summary to stderr. An entity over the input
// limits is a failure, as the sidecar would refuse it. It returns an error
// naming the first failure (after it, unless keepGoing) or the count of
// failures.
func printMapped(ctx context.Context, m *mapping.Mapper, entities []map[string]any, lim limits.Limits, enc entityEncoder, stderr io.Writer, keepGoing bool) error {
	var nEntities, nWarnings, failed int
	var first string
	summary := func(stopped bool) {
		extra := ""
		if stopped {
			extra = " (stopped at the first failure; --keep-going maps the rest)"
		}
		fmt.Fprintf(stderr, "# %d input entities -> %d Port entities, %d field warnings, %d failed to map%s\n", len(entities), nEntities, nWarnings, failed, extra)
	}
	for i, e := range entities {
		in := describeEntity(i, e)
		var r mapping.Result
		if v := lim.CheckEntity(e); v != nil {
			r.Skipped = []mapping.Warning{{ResourceIndex: -1, Field: strings.TrimPrefix(v.Path, "."),
				Message: "the entity is over the input limits, the sidecar would refuse it: " + v.Msg}}
		} else {
			r = m.Map(ctx, e)
		}
		for _, x := range r.Entities {
			if err := enc.encode(in, x); err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
		}
		nEntities += len(r.Entities)
		nWarnings += len(r.Warnings)
		for _, w := range r.Warnings {
			fmt.Fprintf(stderr, "warning: %s: %s\n", in, describeWarning(m, w))
		}
		if len(r.Skipped) == 0 {
			continue
		}
		failed++
		for _, w := range r.Skipped {
			msg := fmt.Sprintf("%s: %s", in, describeWarning(m, w))
			fmt.Fprintf(stderr, "failed: %s\n", msg)
			if first == "" {
				first = msg
			}
		}
		if !keepGoing {
			if err := enc.close(); err != nil {
				return err
			}
			summary(i+1 < len(entities))
			return errors.New(first)
		}
	}
	if err := enc.close(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	summary(false)
	if failed > 0 {
		return fmt.Errorf("%d of %d entities failed to map (first: %s)", failed, len(entities), first)
	}
	return nil
}

// describeWarning names the resource (by index and kind) and the field.
func describeWarning(m *mapping.Mapper, w mapping.Warning) string {
	where := ""
	if res := m.Config().Resources; w.ResourceIndex >= 0 && w.ResourceIndex < len(res) {
		where = fmt.Sprintf("resources[%d] (kind %s)", w.ResourceIndex, res[w.ResourceIndex].Kind)
	}
	if w.Field != "" {
		where = strings.TrimSpace(where + " " + w.Field)
	}
	if where == "" {
		return w.Message
	}
	return where + ": " + w.Message
}

func describeEntity(i int, e map[string]any) string {
	kind, _ := e["kind"].(string)
	meta, _ := e["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	if ns == "" {
		ns = "default"
	}
	return fmt.Sprintf("#%d %s:%s/%s", i+1, kind, ns, name)
}

func benchMap(ctx context.Context, m *mapping.Mapper, path, jqPath string, workers int, stdout io.Writer) error {
	data, err := readInput(path)
	if err != nil {
		return err
	}
	ours, err := mapping.MeasureNDJSON(ctx, m, data, workers)
	if err != nil {
		return fmt.Errorf("map --bench: %w", err)
	}
	fmt.Fprintln(stdout, ours)
	if jqPath == "" {
		return nil
	}
	if _, err := exec.LookPath(jqPath); err != nil {
		return fmt.Errorf("map --bench: jq not found: %w", err)
	}
	theirs, err := mapping.MeasureJQ(ctx, jqPath, m, data)
	if err != nil {
		return fmt.Errorf("map --bench: %w", err)
	}
	fmt.Fprintln(stdout, theirs)
	_, err = fmt.Fprintf(stdout, "portbridge/jq = %.2fx\n", ours.PerSecond()/theirs.PerSecond())
	return err
}
