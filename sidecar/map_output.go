package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"

	"github.com/portbridge/portbridge/sidecar/mapping"
)

// entityEncoder writes mapped Port entities in one of `portbridge map`'s
// output formats. Each entity is written as Port shows it: identifier,
// title, blueprint, icon, team, properties and relations.
type entityEncoder interface {
	encode(input string, x mapping.Mapped) error
	close() error
}

func newEntityEncoder(format string, w io.Writer) (entityEncoder, error) {
	switch format {
	case "yaml":
		return &yamlEncoder{w: w}, nil
	case "json":
		return &jsonArrayEncoder{w: w}, nil
	case "ndjson":
		return &ndjsonEncoder{w: w}, nil
	}
	return nil, fmt.Errorf("%q is not one of yaml, json, ndjson", format)
}

// withBlueprint returns the mapped entity's JSON with "blueprint" added
// after "identifier" (Port's request bodies carry the blueprint in the URL;
// its answers carry it in the entity, and so does this output).
func withBlueprint(x mapping.Mapped) ([]byte, error) {
	var fields []json.RawMessage
	var keys []string
	dec := json.NewDecoder(bytes.NewReader(x.JSON))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		keys = append(keys, k.(string))
		fields = append(fields, v)
	}
	var b bytes.Buffer
	b.WriteByte('{')
	bp, _ := json.Marshal(x.Blueprint)
	wrote := false
	put := func(k string, v []byte) {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		b.Write(v)
	}
	for i, k := range keys {
		if k == "blueprint" {
			continue
		}
		put(k, fields[i])
		if k == "identifier" {
			put("blueprint", bp)
			wrote = true
		}
	}
	if !wrote {
		put("blueprint", bp)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

type ndjsonEncoder struct{ w io.Writer }

func (e *ndjsonEncoder) encode(_ string, x mapping.Mapped) error {
	b, err := withBlueprint(x)
	if err != nil {
		return err
	}
	_, err = e.w.Write(append(b, '\n'))
	return err
}

func (e *ndjsonEncoder) close() error { return nil }

type jsonArrayEncoder struct {
	w io.Writer
	n int
}

func (e *jsonArrayEncoder) encode(_ string, x mapping.Mapped) error {
	b, err := withBlueprint(x)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "  ", "  "); err != nil {
		return err
	}
	sep := ",\n  "
	if e.n == 0 {
		sep = "[\n  "
	}
	e.n++
	_, err = io.WriteString(e.w, sep+out.String())
	return err
}

func (e *jsonArrayEncoder) close() error {
	end := "\n]\n"
	if e.n == 0 {
		end = "[]\n"
	}
	_, err := io.WriteString(e.w, end)
	return err
}

// yamlEncoder writes one YAML document per entity, keys in Port's order,
// with a comment naming the input entity it came from.
type yamlEncoder struct{ w io.Writer }

func (e *yamlEncoder) encode(input string, x mapping.Mapped) error {
	b, err := withBlueprint(x)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return err
	}
	blockStyle(&doc)
	var out bytes.Buffer
	fmt.Fprintf(&out, "--- # %s, resources[%d]\n", input, x.ResourceIndex)
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err = e.w.Write(out.Bytes())
	return err
}

func (e *yamlEncoder) close() error { return nil }

// blockStyle turns the flow style a JSON document decodes with into block
// style, keeping empty collections and strings as they are.
func blockStyle(n *yaml.Node) {
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		if len(n.Content) > 0 {
			n.Style = 0
		}
	}
	if n.Kind == yaml.ScalarNode && n.Style&yaml.DoubleQuotedStyle != 0 {
		// Quote only where YAML needs it ("true", "1", ": " ...).
		n.Style = 0
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}
