package porttest

import (
	"fmt"
	"math"
	"net"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

var propertyTypes = []string{"string", "number", "boolean", "object", "array"}

// apiError is an error answer: status and Port's `error` code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.code, e.msg) }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *apiError {
	return errf(422, "invalid_request", format, args...)
}

func mismatch(format string, args ...any) *apiError {
	return errf(422, "blueprint_schema_mismatch", format, args...)
}

func notFound(format string, args ...any) *apiError {
	return errf(404, "not_found", format, args...)
}

// relDef is a parsed blueprint relation.
type relDef struct {
	target   string
	required bool
	many     bool
}

// checkBlueprint checks what a blueprint body's shape cannot: that array
// properties say what their items are (Port enforces it, see CONTRACT.md),
// that schema.required names properties, that no relation is both many
// and required, and that relation targets exist. exists reports whether a
// blueprint exists; the blueprint may point at itself.
func checkBlueprint(bp map[string]any, exists func(string) bool) *apiError {
	id, _ := bp["identifier"].(string)
	schema, _ := bp["schema"].(map[string]any)
	props, _ := schema["properties"].(map[string]any)
	for _, name := range sortedKeys(props) {
		pm, _ := props[name].(map[string]any)
		typ, _ := pm["type"].(string)
		if !slices.Contains(propertyTypes, typ) {
			return invalid("blueprint %q: property %q has a missing or unknown type %v", id, name, pm["type"])
		}
		if typ == "array" {
			items, _ := pm["items"].(map[string]any)
			if it, _ := items["type"].(string); !slices.Contains(propertyTypes, it) {
				return invalid("blueprint %q: array property %q needs items.type", id, name)
			}
		}
	}
	if req, ok := schema["required"].([]any); ok {
		for _, r := range req {
			if s, ok := r.(string); !ok || props[s] == nil {
				return invalid("blueprint %q: schema.required names %v, which is not a property", id, r)
			}
		}
	}
	rels, _ := bp["relations"].(map[string]any)
	for _, name := range sortedKeys(rels) {
		rm, _ := rels[name].(map[string]any)
		target, _ := rm["target"].(string)
		req, _ := rm["required"].(bool)
		many, _ := rm["many"].(bool)
		if req && many {
			return invalid("blueprint %q: relation %q cannot be both many and required", id, name)
		}
		if target != id && !exists(target) {
			return invalid("blueprint %q: relation %q targets blueprint %q, which does not exist", id, name, target)
		}
	}
	return nil
}

// parseRelations returns the relation definitions of a validated blueprint.
func parseRelations(bp map[string]any) map[string]relDef {
	out := map[string]relDef{}
	rm, _ := bp["relations"].(map[string]any)
	for name, r := range rm {
		m := r.(map[string]any)
		out[name] = relDef{target: m["target"].(string), required: m["required"].(bool), many: m["many"].(bool)}
	}
	return out
}

// checkValue validates one property value against its JSON-schema-like
// definition; path names the field in messages.
func checkValue(path string, def map[string]any, v any) *apiError {
	if v == nil {
		return nil
	}
	typ, _ := def["type"].(string)
	switch typ {
	case "string":
		s, ok := v.(string)
		if !ok {
			return mismatch("%s must be a string", path)
		}
		if err := checkString(path, def, s); err != nil {
			return err
		}
	case "number":
		n, ok := v.(float64)
		if !ok {
			return mismatch("%s must be a number", path)
		}
		if err := checkNumber(path, def, n); err != nil {
			return err
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return mismatch("%s must be a boolean", path)
		}
	case "object":
		if _, ok := v.(map[string]any); !ok {
			return mismatch("%s must be an object", path)
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return mismatch("%s must be an array", path)
		}
		if err := checkArray(path, def, arr); err != nil {
			return err
		}
	}
	if enum, ok := def["enum"].([]any); ok && !slices.ContainsFunc(enum, func(x any) bool { return jsonEqual(x, v) }) {
		return mismatch("%s: %v is not one of the allowed values", path, v)
	}
	return nil
}

func checkString(path string, def map[string]any, s string) *apiError {
	n := float64(utf8.RuneCountInString(s))
	if m, ok := def["minLength"].(float64); ok && n < m {
		return mismatch("%s is shorter than %v", path, m)
	}
	if m, ok := def["maxLength"].(float64); ok && n > m {
		return mismatch("%s is longer than %v", path, m)
	}
	if p, ok := def["pattern"].(string); ok {
		re, err := regexp.Compile(p)
		if err == nil && !re.MatchString(s) {
			return mismatch("%s does not match pattern %s", path, p)
		}
	}
	if f, ok := def["format"].(string); ok && !formatOK(f, s) {
		return mismatch("%s is not a valid %s", path, f)
	}
	return nil
}

func formatOK(format, s string) bool {
	switch format {
	case "date-time", "timer":
		_, err := time.Parse(time.RFC3339, s)
		return err == nil
	case "url":
		u, err := url.Parse(s)
		return err == nil && u.Scheme != "" && u.Host != ""
	case "email", "idn-email", "user":
		a, err := mail.ParseAddress(s)
		return err == nil && a.Address == s
	case "ipv4":
		ip := net.ParseIP(s)
		return ip != nil && ip.To4() != nil && !strings.Contains(s, ":")
	case "ipv6":
		ip := net.ParseIP(s)
		return ip != nil && strings.Contains(s, ":")
	}
	return true
}

func checkNumber(path string, def map[string]any, n float64) *apiError {
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return mismatch("%s is not a finite number", path)
	}
	if m, ok := def["minimum"].(float64); ok && n < m {
		return mismatch("%s is below the minimum %v", path, m)
	}
	if m, ok := def["maximum"].(float64); ok && n > m {
		return mismatch("%s is above the maximum %v", path, m)
	}
	if m, ok := def["exclusiveMinimum"].(float64); ok && n <= m {
		return mismatch("%s must be above %v", path, m)
	}
	if m, ok := def["exclusiveMaximum"].(float64); ok && n >= m {
		return mismatch("%s must be below %v", path, m)
	}
	return nil
}

func checkArray(path string, def map[string]any, arr []any) *apiError {
	n := float64(len(arr))
	if m, ok := def["minItems"].(float64); ok && n < m {
		return mismatch("%s has fewer than %v items", path, m)
	}
	if m, ok := def["maxItems"].(float64); ok && n > m {
		return mismatch("%s has more than %v items", path, m)
	}
	if u, _ := def["uniqueItems"].(bool); u {
		for i := range arr {
			for j := i + 1; j < len(arr); j++ {
				if jsonEqual(arr[i], arr[j]) {
					return mismatch("%s has duplicate items", path)
				}
			}
		}
	}
	if items, ok := def["items"].(map[string]any); ok {
		for i, it := range arr {
			if it == nil {
				return mismatch("%s[%d] is null", path, i)
			}
			if err := checkValue(fmt.Sprintf("%s[%d]", path, i), items, it); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonEqual compares decoded JSON values.
func jsonEqual(a, b any) bool {
	switch x := a.(type) {
	case []any:
		y, ok := b.([]any)
		return ok && slices.EqualFunc(x, y, jsonEqual)
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	}
	return a == b
}
