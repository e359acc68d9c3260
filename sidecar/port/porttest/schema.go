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

var (
	blueprintIDPattern = regexp.MustCompile(`^[\p{L}0-9@_.+:\\/-]+$`)
	keyPattern         = regexp.MustCompile(`^[A-Za-z0-9@_=\-]+$`)
)

var (
	propertyTypes   = []string{"string", "number", "boolean", "object", "array"}
	propertyFormats = []string{"date-time", "url", "email", "idn-email", "ipv4", "ipv6", "markdown", "yaml",
		"user", "blueprints", "team", "timer", "proto", "labeled-url"}
	relationKeys = []string{"title", "target", "required", "many", "description", "type"}
)

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

// validateBlueprintID checks a blueprint identifier.
func validateBlueprintID(id string) *apiError {
	if id == "" || id == "." || id == ".." || utf8.RuneCountInString(id) > 100 || !blueprintIDPattern.MatchString(id) {
		return invalid("blueprint identifier %q is not valid", id)
	}
	return nil
}

// checkBlueprint validates a blueprint body; exists reports whether a
// blueprint id exists (relation targets). self is the blueprint's own id.
func checkBlueprint(bp map[string]any, exists func(string) bool) *apiError {
	id, _ := bp["identifier"].(string)
	if err := validateBlueprintID(id); err != nil {
		return err
	}
	title, ok := bp["title"].(string)
	if !ok || title == "" || utf8.RuneCountInString(title) > 100 {
		return invalid("blueprint %q: title must be a string of 1 to 100 characters", id)
	}
	if d, ok := bp["description"]; ok {
		if s, ok := d.(string); !ok || utf8.RuneCountInString(s) > 200 {
			return invalid("blueprint %q: description must be a string of at most 200 characters", id)
		}
	}
	schema, ok := bp["schema"].(map[string]any)
	if !ok {
		return invalid("blueprint %q: schema is required", id)
	}
	for k := range schema {
		if k != "properties" && k != "required" {
			return invalid("blueprint %q: schema has an unknown key %q", id, k)
		}
	}
	props, ok := schema["properties"].(map[string]any)
	if !ok {
		return invalid("blueprint %q: schema.properties is required", id)
	}
	for name, p := range props {
		if err := checkKey(id, "property", name); err != nil {
			return err
		}
		pm, ok := p.(map[string]any)
		if !ok {
			return invalid("blueprint %q: property %q must be an object", id, name)
		}
		typ, _ := pm["type"].(string)
		if !slices.Contains(propertyTypes, typ) {
			return invalid("blueprint %q: property %q has a missing or unknown type %v", id, name, pm["type"])
		}
		if f, ok := pm["format"]; ok {
			if fs, _ := f.(string); !slices.Contains(propertyFormats, fs) {
				return invalid("blueprint %q: property %q has an unknown format %v", id, name, f)
			}
		}
		if typ == "array" {
			items, _ := pm["items"].(map[string]any)
			if it, _ := items["type"].(string); !slices.Contains(propertyTypes, it) {
				return invalid("blueprint %q: array property %q needs items.type", id, name)
			}
		}
		if t, ok := pm["title"].(string); ok && utf8.RuneCountInString(t) > 100 {
			return invalid("blueprint %q: property %q has a title over 100 characters", id, name)
		}
	}
	if req, ok := schema["required"]; ok {
		list, ok := req.([]any)
		if !ok {
			return invalid("blueprint %q: schema.required must be an array", id)
		}
		for _, r := range list {
			if s, ok := r.(string); !ok || props[s] == nil {
				return invalid("blueprint %q: schema.required names %v, which is not a property", id, r)
			}
		}
	}
	if rels, ok := bp["relations"]; ok && rels != nil {
		rm, ok := rels.(map[string]any)
		if !ok {
			return invalid("blueprint %q: relations must be an object", id)
		}
		for name, r := range rm {
			if err := checkRelation(id, name, r, exists); err != nil {
				return err
			}
		}
	}
	for _, key := range []string{"mirrorProperties", "calculationProperties", "aggregationProperties"} {
		if v, ok := bp[key]; ok && v != nil {
			m, ok := v.(map[string]any)
			if !ok {
				return invalid("blueprint %q: %s must be an object", id, key)
			}
			for name := range m {
				if err := checkKey(id, key, name); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func checkKey(bp, what, name string) *apiError {
	if len(name) > 100 || !keyPattern.MatchString(name) {
		return invalid("blueprint %q: %s key %q is not valid", bp, what, name)
	}
	return nil
}

func checkRelation(bp, name string, r any, exists func(string) bool) *apiError {
	if err := checkKey(bp, "relation", name); err != nil {
		return err
	}
	rm, ok := r.(map[string]any)
	if !ok {
		return invalid("blueprint %q: relation %q must be an object", bp, name)
	}
	for k := range rm {
		if !slices.Contains(relationKeys, k) {
			return invalid("blueprint %q: relation %q has an unknown key %q", bp, name, k)
		}
	}
	target, ok1 := rm["target"].(string)
	req, ok2 := rm["required"].(bool)
	many, ok3 := rm["many"].(bool)
	if !ok1 || !ok2 || !ok3 {
		return invalid("blueprint %q: relation %q needs target, required and many", bp, name)
	}
	if req && many {
		return invalid("blueprint %q: relation %q cannot be both many and required", bp, name)
	}
	if target != bp && !exists(target) {
		return invalid("blueprint %q: relation %q targets blueprint %q, which does not exist", bp, name, target)
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
