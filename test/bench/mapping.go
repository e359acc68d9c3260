package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"

	"github.com/portbridge/portbridge/sidecar/mapping"
)

// measureMapping is row 1: the mapping pipeline (decode → jq → canonical
// entity → hash) on every core against the jq CLI running the same mapping
// over the same NDJSON.
func measureMapping(ctx context.Context, g *rig, rep *Report) {
	const what = "mapping pipeline vs jq CLI"
	jq, err := exec.LookPath(g.cfg.JQ)
	if err != nil {
		rep.fail(what, fmt.Errorf("the jq command line tool %q is not on PATH (apt-get install jq): %w", g.cfg.JQ, err))
		return
	}
	m, err := mapping.New(mapping.DefaultConfig(), mapping.Options{Blueprints: mapping.DefaultBlueprints()})
	if err != nil {
		rep.fail(what, fmt.Errorf("compile the default mapping: %w", err))
		return
	}
	ndjson, n, err := catalogNDJSON(ctx, g, g.cfg.mapN())
	if err != nil {
		rep.fail(what, err)
		return
	}
	workers := runtime.GOMAXPROCS(0)
	g.logf("mapping %d entities (%.1f MB of NDJSON) with portbridge on %d workers, then with %s", n, float64(len(ndjson))/1e6, workers, jq)
	// Warm up (lazy caches, page faults) on a slice, then measure the whole.
	if _, err := mapping.MeasureNDJSON(ctx, m, firstLines(ndjson, 1000), workers); err != nil {
		rep.fail(what, fmt.Errorf("warm-up: %w", err))
		return
	}
	ours, err := mapping.MeasureNDJSON(ctx, m, ndjson, workers)
	if err != nil {
		rep.fail(what, fmt.Errorf("portbridge mapping: %w", err))
		return
	}
	theirs, err := mapping.MeasureJQ(ctx, jq, m, ndjson)
	if err != nil {
		rep.fail(what, fmt.Errorf("jq CLI: %w", err))
		return
	}
	g.logf("%s", ours)
	g.logf("%s", theirs)
	ratio := ours.PerSecond() / theirs.PerSecond()
	rep.row("mapping: portbridge (decode→jq→hash)", fmt.Sprintf("%s entities/s (%d workers, %s)", count(int(ours.PerSecond())), ours.Workers, secs(ours.Elapsed)), "", Info)
	rep.row("mapping: jq CLI, same program + NDJSON", fmt.Sprintf("%s entities/s (1 process, %s)", count(int(theirs.PerSecond())), secs(theirs.Elapsed)), "", Info)
	rep.check("mapping: portbridge ÷ jq", fmt.Sprintf("%.1f×", ratio), "≥ 3× (both cores)", ratio >= 3)
	jqVersion, _ := exec.CommandContext(ctx, jq, "--version").Output()
	rep.note("Mapping: %s entities, evenly spread over the catalog emulator's %s (catalogtest.Generate(%d, 1)) and read back through by-refs "+
		"(so they carry uid, etag and relations as the catalog API serves them), one JSON object per line (%.1f MB). portbridge: mapping.MeasureNDJSON with the "+
		"default mapping and blueprints on %d goroutines (json decode, every matching resource's compiled gojq program, canonical entity, "+
		"xxhash), after a 1,000-line warm-up; %d Port entities out. jq: mapping.MeasureJQ runs `%s -c -f <Mapper.JQProgram()>` (%s) over the "+
		"same bytes on stdin and counts output lines (%d). Both in the same run on this %d-core machine.",
		count(n), count(g.n), g.n, float64(len(ndjson))/1e6, ours.Workers, ours.Outputs, jq, bytes.TrimSpace(jqVersion), theirs.Outputs, runtime.NumCPU())
}

// catalogNDJSON returns n entities of the catalog emulator spread over
// its sorted refs as NDJSON, as the catalog API serves them.
func catalogNDJSON(ctx context.Context, g *rig, n int) ([]byte, int, error) {
	refs, err := g.refs(ctx)
	if err != nil {
		return nil, 0, err
	}
	picked := spread(refs, n)
	ents, err := g.cat.get(ctx, picked)
	if err != nil {
		return nil, 0, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i, e := range ents {
		if err := enc.Encode(e); err != nil {
			return nil, 0, fmt.Errorf("encode %s as JSON: %w", picked[i], err)
		}
	}
	return buf.Bytes(), len(picked), nil
}

// spread picks n of refs evenly (all kinds appear in every part of the
// generated catalog, but sorted refs group them by kind).
func spread(refs []string, n int) []string {
	if n >= len(refs) {
		return refs
	}
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, refs[i*len(refs)/n])
	}
	return out
}

func firstLines(b []byte, n int) []byte {
	end := 0
	for i := 0; i < n; i++ {
		j := bytes.IndexByte(b[end:], '\n')
		if j < 0 {
			return b
		}
		end += j + 1
	}
	return b[:end]
}
