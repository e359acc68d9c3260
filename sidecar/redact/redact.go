// Package redact keeps secrets out of text shown to people: it hides the
// user info of URLs (https://user:pass@host), replaces known secret values,
// and quotes at most a short prefix of a value in error messages. Logs,
// status answers and errors all go through it, so there is one rule for
// what may be shown.
package redact

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Mask replaces a secret or the user info of a URL.
const Mask = "[REDACTED]"

// userInfo matches the user info of a URL inside free text: a scheme, "//",
// and everything up to the last "@" before the host (a password may contain
// an unescaped "@").
var userInfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s"'<>]*@`)

// URL returns s with the user info of every URL in it replaced by Mask:
// "https://user:pass@host/x" becomes "https://[REDACTED]@host/x". The user
// name is hidden too, since some services take a token as the user name.
func URL(s string) string {
	if !strings.Contains(s, "@") || !strings.Contains(s, "://") {
		return s // the common case: nothing to redact, no allocation
	}
	return userInfo.ReplaceAllString(s, "${1}"+Mask+"@")
}

// Redactor hides a fixed set of secret values and URL user info.
// The zero value hides URL user info only.
type Redactor struct {
	r *strings.Replacer
}

// minSecret is the shortest secret that is replaced: shorter values would
// match ordinary text and make every log line unreadable.
const minSecret = 4

// New returns a Redactor for the given secret values; values shorter than
// four bytes are not replaced.
func New(secrets []string) *Redactor {
	var pairs []string
	for _, s := range secrets {
		if len(s) >= minSecret {
			pairs = append(pairs, s, Mask)
		}
	}
	if len(pairs) == 0 {
		return &Redactor{}
	}
	return &Redactor{r: strings.NewReplacer(pairs...)}
}

// String returns s with every secret and every URL's user info replaced.
func (r *Redactor) String(s string) string {
	if r != nil && r.r != nil {
		s = r.r.Replace(s)
	}
	return URL(s)
}

// quoteBytes is how much of a value Quote shows.
const quoteBytes = 40

// Quote quotes a value for an error message: all of it when it is short,
// else its first 40 bytes (cut at a character boundary) and its length, so
// that a 1 MiB value never makes a 1 MiB error. URL user info in the
// quoted part is redacted.
func Quote(s string) string { return QuoteN(s, quoteBytes) }

// QuoteN is Quote showing up to limit bytes (for values that are long by
// nature, such as jq expressions).
func QuoteN(s string, limit int) string {
	n := len(s)
	s = URL(s) // before cutting, so a cut inside the user info hides it too
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), n)
}
