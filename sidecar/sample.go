package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/catalog/catalogtest"
	"github.com/portbridge/portbridge/sidecar/config"
	"github.com/portbridge/portbridge/sidecar/mapping"
)

// exampleCatalog are the files of Backstage's example catalog in this
// repository (testdata/), loaded the way `portbridge dev` loads them.
var exampleCatalog = []string{"testdata/backstage-examples/all.yaml", "testdata/backstage-examples/acme-corp.yaml"}

// sampleInfo says where catalog entities came from.
type sampleInfo struct {
	// Source is "catalog" (the live Backstage catalog), "file", "examples"
	// (the example catalog in testdata) or "none".
	Source   string `json:"source"`
	Detail   string `json:"detail,omitempty"`
	Entities int    `json:"entities"`
	Note     string `json:"note,omitempty"`
}

func (s sampleInfo) String() string {
	switch s.Source {
	case "none":
		return "none (" + s.Note + ")"
	case "catalog":
		return fmt.Sprintf("%d entities of the live catalog at %s%s", s.Entities, s.Detail, noteSuffix(s.Note))
	case "examples":
		return fmt.Sprintf("%d entities of the example catalog %s%s", s.Entities, s.Detail, noteSuffix(s.Note))
	}
	return fmt.Sprintf("%d entities from %s%s", s.Entities, s.Detail, noteSuffix(s.Note))
}

func noteSuffix(n string) string {
	if n == "" {
		return ""
	}
	return " (" + n + ")"
}

// sampleSource yields catalog entities, as the catalog API returns them
// (with relations), from one of: a file, the live catalog, the example
// catalog. err is set when reading stopped early.
type sampleSource struct {
	info sampleInfo
	seq  func(yield func(map[string]any) bool)
	err  error
}

// fileSample reads entities from a file like `portbridge map --entities`
// (YAML, JSON, NDJSON; - for stdin). Descriptor files without relations
// (what you would register in Backstage) are loaded through the catalog
// emulator, which adds the relations Backstage computes and follows
// Location targets.
func fileSample(path string) (*sampleSource, error) {
	data, err := readInput(path)
	if err != nil {
		return nil, err
	}
	ents, err := mapping.ReadEntities(data)
	if err != nil {
		return nil, fmt.Errorf("reading entities from %s: %w", path, err)
	}
	withRelations := slices.ContainsFunc(ents, func(e map[string]any) bool { _, ok := e["relations"]; return ok })
	if path != "-" && !withRelations {
		if s, err := stitchedSample(path); err == nil {
			s.info.Source, s.info.Detail = "file", path
			return s, nil
		}
	}
	s := &sampleSource{info: sampleInfo{Source: "file", Detail: path, Entities: len(ents)}, seq: slices.Values(ents)}
	if !withRelations {
		s.info.Note = "no relations: the catalog computes them; mappings that read .relations see none"
	}
	return s, nil
}

// stitchedSample loads catalog files into a catalog emulator (following
// Location targets) and yields what its API would return.
func stitchedSample(paths ...string) (*sampleSource, error) {
	cat := catalogtest.New(catalogtest.Options{})
	if err := cat.LoadFiles(paths...); err != nil {
		return nil, err
	}
	refs := cat.Refs()
	return &sampleSource{info: sampleInfo{Entities: len(refs)}, seq: func(yield func(map[string]any) bool) {
		for _, ref := range refs {
			if e, ok := cat.Get(ref); ok && !yield(e) {
				return
			}
		}
	}}, nil
}

// findExamples looks for the example catalog in the working directory and
// its parents (the repository root when run from a checkout).
func findExamples() ([]string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return nil, false
	}
	for {
		var paths []string
		for _, f := range exampleCatalog {
			paths = append(paths, filepath.Join(dir, f))
		}
		if _, err := os.Stat(paths[0]); err == nil {
			return paths, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil, false
		}
		dir = parent
	}
}

// exampleSample is the example catalog, or nil when it is not found.
func exampleSample() *sampleSource {
	paths, ok := findExamples()
	if !ok {
		return nil
	}
	s, err := stitchedSample(paths...)
	if err != nil {
		return nil
	}
	s.info.Source, s.info.Detail = "examples", filepath.Dir(paths[0])
	return s
}

// catalogSample streams up to limit entities (0: all) of the live catalog.
func catalogSample(ctx context.Context, cfg *config.Config, limit int) *sampleSource {
	s := &sampleSource{info: sampleInfo{Source: "catalog", Detail: redactURL(cfg.Backstage.BaseURL)}}
	s.seq = func(yield func(map[string]any) bool) {
		cc, err := catalog.New(catalog.Config{BaseURL: cfg.Backstage.BaseURL, Token: cfg.Backstage.Token, PageSize: cfg.Backstage.PageSize, Retries: 2})
		if err != nil {
			s.err = err
			return
		}
		for e, err := range cc.Entities(ctx, catalog.Query{}) {
			if err != nil {
				s.err = err
				return
			}
			s.info.Entities++
			if !yield(e) {
				return
			}
			if limit > 0 && s.info.Entities >= limit {
				s.info.Note = fmt.Sprintf("the first %d; --sample-limit changes it", limit)
				return
			}
		}
	}
	return s
}
