package port

import (
	"fmt"
	"regexp"
	"unicode/utf8"
)

// MaxIdentifierLength is the longest entity identifier Port accepts.
const MaxIdentifierLength = 1000

// identifierPattern is Port's entity identifier pattern without its
// look-ahead (RE2 has none); "." and ".." are refused separately.
var identifierPattern = regexp.MustCompile(`^[\p{L}0-9@_.+:\\/=-]+$`)

// ValidateIdentifier checks an entity identifier against Port's rules:
// Unicode letters, digits and @ _ . + : \ / = -, at most 1000 characters,
// and not "." or "..".
func ValidateIdentifier(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("identifier is empty")
	case utf8.RuneCountInString(id) > MaxIdentifierLength:
		return fmt.Errorf("identifier is %d characters long, the limit is %d", utf8.RuneCountInString(id), MaxIdentifierLength)
	case id == "." || id == "..":
		return fmt.Errorf("identifier %q is not allowed", id)
	case !identifierPattern.MatchString(id):
		return fmt.Errorf("identifier %q has characters outside letters, digits and @_.+:\\/=-", id)
	}
	return nil
}

// validateEntity checks what the client can check before sending an entity:
// its identifier (when it is a string) and the string targets of its
// relations. The error names the entity and the field.
func validateEntity(blueprint string, e *Entity) error {
	id, isString := e.Identifier.(string)
	if isString {
		if err := ValidateIdentifier(id); err != nil {
			return &Error{Code: CodeInvalidIdentifier, Entity: id,
				Message: fmt.Sprintf("blueprint %q, field identifier: %v", blueprint, err)}
		}
	}
	for rel, v := range e.Relations {
		var targets []any
		switch t := v.(type) {
		case string:
			targets = []any{t}
		case []any:
			targets = t
		case []string:
			for _, s := range t {
				targets = append(targets, s)
			}
		}
		for _, t := range targets {
			s, ok := t.(string)
			if !ok {
				continue
			}
			if err := ValidateIdentifier(s); err != nil {
				return &Error{Code: CodeInvalidIdentifier, Entity: id,
					Message: fmt.Sprintf("blueprint %q, field relations.%s: %v", blueprint, rel, err)}
			}
		}
	}
	return nil
}
