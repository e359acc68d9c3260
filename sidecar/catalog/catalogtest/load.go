package catalogtest

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/portbridge/portbridge/sidecar/catalog"
)

// Annotations Backstage puts on entities read from a location.
const (
	AnnotationLocation       = "backstage.io/managed-by-location"
	AnnotationOriginLocation = "backstage.io/managed-by-origin-location"
)

// loaded is an entity read from a file, with where it came from.
type loaded struct {
	entity catalog.Entity
	file   string
	index  int
}

// LoadFiles reads catalog YAML files as Backstage reads `file` locations
// from its config: each path becomes a generated Location entity, every
// document becomes an entity with the location annotations, and Location
// entities' `target`/`targets` are followed relative to their file. Valid
// entities are stored even when others are not; the error names each
// invalid entity by file and document.
func (e *Emulator) LoadFiles(paths ...string) error {
	var all []loaded
	var errs []error
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return fmt.Errorf("load catalog file %s: %w", p, err)
		}
		root := "file:" + abs
		sum := sha1.Sum([]byte(root))
		all = append(all, loaded{entity: catalog.Entity{
			"apiVersion": "backstage.io/v1alpha1",
			"kind":       "Location",
			"metadata": map[string]any{
				"name":        "generated-" + hex.EncodeToString(sum[:]),
				"namespace":   catalog.DefaultNamespace,
				"annotations": map[string]any{AnnotationLocation: root, AnnotationOriginLocation: root},
			},
			"spec": map[string]any{"type": "file", "target": abs},
		}, file: abs, index: -1})
		ents, err := readLocation(abs, root, map[string]bool{})
		all = append(all, ents...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	name := func(i int) string {
		if all[i].index < 0 {
			return fmt.Sprintf("generated location for %s", all[i].file)
		}
		return fmt.Sprintf("%s document %d", all[i].file, all[i].index+1)
	}
	seq := func(yield func(catalog.Entity) bool) {
		for _, l := range all {
			if !yield(l.entity) {
				return
			}
		}
	}
	if err := e.upsertSeq(seq, true, name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// readLocation reads one file and the files its Location entities target.
func readLocation(file, origin string, seen map[string]bool) ([]loaded, error) {
	if seen[file] {
		return nil, nil
	}
	seen[file] = true
	docs, err := ReadYAML(file)
	if err != nil {
		return nil, err
	}
	var out []loaded
	var errs []error
	for i, ent := range docs {
		meta, _ := ent["metadata"].(map[string]any)
		if meta != nil {
			ann, _ := meta["annotations"].(map[string]any)
			if ann == nil {
				ann = map[string]any{}
				meta["annotations"] = ann
			}
			ann[AnnotationLocation] = "file:" + file
			ann[AnnotationOriginLocation] = origin
		}
		out = append(out, loaded{entity: ent, file: file, index: i})
		if kind, _ := ent["kind"].(string); kind != "Location" && kind != "location" {
			continue
		}
		spec, _ := ent["spec"].(map[string]any)
		var targets []string
		if t, ok := spec["target"].(string); ok && t != "" {
			targets = append(targets, t)
		}
		if ts, ok := spec["targets"].([]any); ok {
			for _, t := range ts {
				if s, ok := t.(string); ok {
					targets = append(targets, s)
				}
			}
		}
		if typ, ok := spec["type"].(string); ok && typ != "file" && len(targets) > 0 {
			errs = append(errs, fmt.Errorf("%s document %d: location type %q is not supported by the emulator (only file)", file, i+1, typ))
			continue
		}
		for _, t := range targets {
			target := t
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(file), target)
			}
			sub, err := readLocation(target, origin, seen)
			out = append(out, sub...)
			if err != nil {
				errs = append(errs, fmt.Errorf("location target %s of %s: %w", t, file, err))
			}
		}
	}
	return out, errors.Join(errs...)
}

// ReadYAML reads a multi-document catalog YAML (or JSON) file into entities
// decoded as the catalog API would give them (numbers as float64).
func ReadYAML(file string) ([]catalog.Entity, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read catalog file: %w", err)
	}
	ents, err := DecodeYAML(b)
	if err != nil {
		return nil, fmt.Errorf("catalog file %s: %w", file, err)
	}
	return ents, nil
}

// DecodeYAML decodes multi-document YAML (JSON objects and arrays of objects
// are YAML too) into entities. Empty documents are skipped.
func DecodeYAML(b []byte) ([]catalog.Entity, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var out []catalog.Entity
	for i := 1; ; i++ {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("YAML document %d: %w", i, err)
		}
		if doc == nil {
			continue
		}
		j, err := json.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("YAML document %d: %w", i, err)
		}
		var v any
		if err := json.Unmarshal(j, &v); err != nil {
			return nil, fmt.Errorf("YAML document %d: %w", i, err)
		}
		switch x := v.(type) {
		case map[string]any:
			out = append(out, x)
		case []any:
			for k, item := range x {
				m, ok := item.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("YAML document %d item %d: not an object", i, k+1)
				}
				out = append(out, m)
			}
		default:
			return nil, fmt.Errorf("YAML document %d: not an object", i)
		}
	}
}
