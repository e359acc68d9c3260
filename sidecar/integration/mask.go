package integration

import (
	"regexp"
	"strings"
	"unicode"
)

// Masked replaces every value Mask hides.
const Masked = "[REDACTED]"

// secretWords are the words of a key (split at punctuation and at
// camelCase boundaries, lower-cased) that make the key secret-looking;
// secretSuffixes make a word secret-looking when it ends with them
// ("accesstoken", "dbpassword"), so that "author" or "monkey" stay visible.
var (
	secretWords = map[string]bool{"token": true, "tokens": true, "secret": true, "secrets": true, "password": true, "passwords": true,
		"passwd": true, "pwd": true, "key": true, "keys": true, "credential": true, "credentials": true, "auth": true, "authorization": true,
		"cookie": true, "cookies": true, "session": true, "signature": true, "private": true, "passphrase": true}
	secretSuffixes = []string{"token", "tokens", "secret", "secrets", "password", "passwd", "credential", "credentials",
		"apikey", "accesskey", "secretkey", "privatekey"}
)

// secretValues match values that look like credentials whatever their key.
var secretValues = []*regexp.Regexp{
	regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----`),                           // PEM private keys
	regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*`), // JWTs
	regexp.MustCompile(`\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}`),                     // GitHub tokens
	regexp.MustCompile(`\bgithub_pat_[A-Za-z0-9_]{20,}`),                               // GitHub fine-grained tokens
	regexp.MustCompile(`\bglpat-[A-Za-z0-9_-]{20,}`),                                   // GitLab tokens
	regexp.MustCompile(`\bxox[abprs]-[A-Za-z0-9-]{10,}`),                               // Slack tokens
	regexp.MustCompile(`\b(AKIA|ASIA)[A-Z0-9]{16}\b`),                                  // AWS access key ids
	regexp.MustCompile(`\bAIza[A-Za-z0-9_-]{35}`),                                      // Google API keys
	regexp.MustCompile(`\bsk_(live|test)_[A-Za-z0-9]{16,}`),                            // Stripe secret keys
	regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{16,}`),               // Authorization header values
	regexp.MustCompile(`://[^/\s:@]+:[^/\s@]+@`),                                       // passwords in URLs
}

// uuidLike matches Backstage's uid format, which is not a secret.
var uuidLike = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// Mask returns a deep copy of a raw Backstage entity with secret-looking
// values replaced by Masked, for the raw examples sent to Port:
//
//   - in metadata (annotations, labels, links and every other field) and
//     spec, the value of every key that looks like a secret's (secretWords);
//   - anywhere in the entity, a string that looks like a credential
//     (secretValues) or a long random token (at least 32 characters of
//     letters, digits and -_+/=, with upper- and lower-case letters and
//     digits, no spaces) — except metadata.uid and metadata.etag, which
//     Backstage generates and which are no secrets.
func Mask(entity map[string]any) map[string]any {
	out := make(map[string]any, len(entity))
	for k, v := range entity {
		switch k {
		case "metadata", "spec":
			out[k] = maskValue(v, true, k == "metadata")
		default:
			out[k] = maskValue(v, false, false)
		}
	}
	return out
}

// maskValue copies v; byKey masks values under secret-looking keys; meta
// spares uid and etag at this level.
func maskValue(v any, byKey, meta bool) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			switch {
			case meta && (k == "uid" || k == "etag"):
				out[k] = x
			case byKey && secretKey(k) && x != nil:
				out[k] = Masked
			default:
				out[k] = maskValue(x, byKey, false)
			}
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = maskValue(x, byKey, false)
		}
		return out
	case string:
		if secretString(t) {
			return Masked
		}
		return t
	}
	return v
}

// secretKey reports whether a key looks like it names a secret.
func secretKey(key string) bool {
	for _, w := range words(key) {
		if secretWords[w] {
			return true
		}
		for _, suf := range secretSuffixes {
			if strings.HasSuffix(w, suf) {
				return true
			}
		}
	}
	return false
}

// words splits a key at anything that is not a letter or digit and at
// lower→upper case boundaries, lower-cased: "x-apiKey_ID" → x, api, key, id.
func words(key string) []string {
	var out []string
	var cur []rune
	var prev rune
	flush := func() {
		if len(cur) > 0 {
			out = append(out, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	for _, r := range key {
		switch {
		case !unicode.IsLetter(r) && !unicode.IsDigit(r):
			flush()
		case unicode.IsUpper(r) && prev != 0 && unicode.IsLower(prev):
			flush()
			cur = append(cur, r)
		default:
			cur = append(cur, r)
		}
		prev = r
	}
	flush()
	return out
}

// secretString reports whether a value looks like a credential.
func secretString(s string) bool {
	for _, re := range secretValues {
		if re.MatchString(s) {
			return true
		}
	}
	return randomToken(s)
}

// randomToken reports a long string that looks random: at least 32
// characters of [A-Za-z0-9-_+/=], with upper, lower and digits, and not a
// UUID.
func randomToken(s string) bool {
	if len(s) < 32 || uuidLike.MatchString(s) {
		return false
	}
	var upper, lower, digit bool
	for _, r := range s {
		switch {
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= 'a' && r <= 'z':
			lower = true
		case r >= '0' && r <= '9':
			digit = true
		case strings.ContainsRune("-_+/=", r):
		default:
			return false
		}
	}
	return upper && lower && digit
}
