package mapping

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"go.yaml.in/yaml/v3"
)

// ReadEntities decodes Backstage entities from JSON (one object or an array),
// NDJSON (one object per line) or YAML (one or many documents). Values come
// out as encoding/json would produce them (numbers as float64), which is what
// Map expects.
func ReadEntities(data []byte) ([]map[string]any, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("no entities: the input is empty")
	}
	switch trimmed[0] {
	case '[':
		var list []map[string]any
		if err := json.Unmarshal(trimmed, &list); err != nil {
			return nil, fmt.Errorf("decoding a JSON array of entities: %w", err)
		}
		return list, nil
	case '{':
		return readNDJSON(trimmed)
	}
	return readYAML(data)
}

// readNDJSON reads one or more JSON objects, one per line or pretty-printed
// one after another.
func readNDJSON(data []byte) ([]map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var out []map[string]any
	for {
		var e map[string]any
		err := dec.Decode(&e)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decoding JSON entity %d: %w", len(out)+1, err)
		}
		out = append(out, e)
	}
}

// ScanNDJSON calls fn with each non-empty line of NDJSON input.
func ScanNDJSON(r io.Reader, fn func(line []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return sc.Err()
}

func readYAML(data []byte) ([]map[string]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []map[string]any
	for i := 1; ; i++ {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decoding YAML document %d: %w", i, err)
		}
		if v == nil {
			continue
		}
		n, err := normalizeYAML(v)
		if err != nil {
			return nil, fmt.Errorf("YAML document %d: %w", i, err)
		}
		switch n := n.(type) {
		case map[string]any:
			out = append(out, n)
		case []any:
			for j, x := range n {
				m, ok := x.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("YAML document %d item %d is not an entity object", i, j)
				}
				out = append(out, m)
			}
		default:
			return nil, fmt.Errorf("YAML document %d is not an entity object", i)
		}
	}
}

// normalizeYAML converts YAML-decoded values to the JSON data model:
// string-keyed maps, float64 numbers, timestamps as RFC 3339 strings.
func normalizeYAML(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			n, err := normalizeYAML(x)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			v[k] = n
		}
		return v, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			n, err := normalizeYAML(x)
			if err != nil {
				return nil, fmt.Errorf("%v: %w", k, err)
			}
			out[fmt.Sprint(k)] = n
		}
		return out, nil
	case []any:
		for i, x := range v {
			n, err := normalizeYAML(x)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			v[i] = n
		}
		return v, nil
	case int:
		return float64(v), nil
	case int64:
		return float64(v), nil
	case uint64:
		return float64(v), nil
	case float64, string, bool, nil:
		return v, nil
	case time.Time:
		return v.Format(time.RFC3339Nano), nil
	}
	return nil, fmt.Errorf("unsupported YAML value of type %T", v)
}

// parseDocument parses a JSON or YAML text that must hold an object.
func parseDocument(s string) (map[string]any, error) {
	var v any
	if t := bytes.TrimSpace([]byte(s)); len(t) > 0 && t[0] == '{' {
		if err := json.Unmarshal(t, &v); err == nil {
			if m, ok := v.(map[string]any); ok {
				return m, nil
			}
		}
	}
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		return nil, err
	}
	n, err := normalizeYAML(v)
	if err != nil {
		return nil, err
	}
	m, ok := n.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the document is a %s", typeName(n))
	}
	return m, nil
}
