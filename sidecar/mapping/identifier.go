package mapping

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxIdentifierLen is Port's limit on identifier length.
const MaxIdentifierLen = 1000

// ValidIdentifier reports why s is not a valid Port entity identifier
// (`^(?!\.{1,2}$)[\p{L}0-9@_.+:\\/=-]+$`, at most 1000 characters), or nil.
// It also rejects values that look like a Backstage entity ref with an empty
// part (`system:default/`), which the default Ocean mapping produces and which
// would make Port create a bogus placeholder entity.
func ValidIdentifier(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("identifier is empty")
	case len(s) > MaxIdentifierLen && utf8.RuneCountInString(s) > MaxIdentifierLen:
		return fmt.Errorf("identifier is longer than %d characters", MaxIdentifierLen)
	case s == "." || s == "..":
		return fmt.Errorf("identifier %q is not allowed", s)
	}
	for _, r := range s {
		if r < utf8.RuneSelf {
			if !identASCII[r] {
				return fmt.Errorf("identifier %q contains %q; Port allows letters, digits and @_.+:\\/=-", clip(s), r)
			}
			continue
		}
		if !unicode.IsLetter(r) {
			return fmt.Errorf("identifier %q contains %q; Port allows letters, digits and @_.+:\\/=-", clip(s), r)
		}
	}
	if last := s[len(s)-1]; last == '/' || last == ':' {
		return fmt.Errorf("identifier %q ends with %q: an entity ref with an empty name", clip(s), last)
	}
	return nil
}

var identASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range `@_.+:\/=-` {
		t[c] = true
	}
	return t
}()

func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
