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
//	portbridge map [--config MAPPING] --entities FILE   print Port entities and warnings
//	portbridge map [--config MAPPING] --bench FILE      print entities per second (NDJSON input)
//
// Without --config the embedded default mapping is used.
func runMap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("map", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "port-app-config `FILE` (YAML, Port's format); default: the embedded default mapping")
	entitiesPath := fs.String("entities", "", "Backstage entities `FILE`: YAML (one or many documents), JSON (object or array) or NDJSON; - for stdin")
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
	return printMapped(ctx, m, entities, def.Limits.Bounds(), stdout)
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

// mapOutput is what the playground prints for one input entity.
type mapOutput struct {
	Input      string            `json:"input"`
	Entities   []mappedOutput    `json:"entities,omitempty"`
	Warnings   []mapping.Warning `json:"warnings,omitempty"`
	Skipped    []mapping.Warning `json:"skipped,omitempty"`
	Unselected []int             `json:"unselected,omitempty"`
}

type mappedOutput struct {
	Resource  int             `json:"resource"`
	Blueprint string          `json:"blueprint"`
	Hash      string          `json:"hash"`
	Entity    json.RawMessage `json:"entity"`
}

// printMapped maps each entity and prints the result; an entity over the
// input limits is reported as skipped, as the sidecar would refuse it.
func printMapped(ctx context.Context, m *mapping.Mapper, entities []map[string]any, lim limits.Limits, stdout io.Writer) error {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	var nEntities, nWarnings, nSkipped int
	for i, e := range entities {
		if v := lim.CheckEntity(e); v != nil {
			nSkipped++
			out := mapOutput{Input: describeEntity(i, e), Skipped: []mapping.Warning{{ResourceIndex: -1, Field: strings.TrimPrefix(v.Path, "."),
				Message: "the entity is over the input limits, the sidecar would refuse it: " + v.Msg}}}
			if err := enc.Encode(out); err != nil {
				return err
			}
			continue
		}
		r := m.Map(ctx, e)
		out := mapOutput{Input: describeEntity(i, e), Warnings: r.Warnings, Skipped: r.Skipped, Unselected: r.Unselected}
		for _, x := range r.Entities {
			out.Entities = append(out.Entities, mappedOutput{Resource: x.ResourceIndex, Blueprint: x.Blueprint, Hash: fmt.Sprintf("%016x", x.Hash), Entity: x.JSON})
		}
		nEntities += len(r.Entities)
		nWarnings += len(r.Warnings)
		nSkipped += len(r.Skipped)
		if err := enc.Encode(out); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(stdout, "# %d input entities -> %d Port entities, %d field warnings, %d skipped\n", len(entities), nEntities, nWarnings, nSkipped)
	return err
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
