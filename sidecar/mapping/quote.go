package mapping

import "strings"

// normalizeQuotes rewrites jq string literals written with single quotes,
// which Port's integration accepts, into double-quoted ones: outside
// double-quoted strings, a '…' segment becomes "…" (with inner double quotes
// escaped). Ocean applies the same rewrite before compiling a pattern; real jq
// rejects single quotes, so no valid jq expression changes meaning.
func normalizeQuotes(expr string) string {
	if !strings.Contains(expr, "'") {
		return expr
	}
	var b strings.Builder
	b.Grow(len(expr) + 8)
	inDouble := false
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case inDouble:
			b.WriteByte(c)
			if c == '\\' && i+1 < len(expr) {
				i++
				b.WriteByte(expr[i])
			} else if c == '"' {
				inDouble = false
			}
		case c == '"':
			inDouble = true
			b.WriteByte(c)
		case c == '#':
			// A comment runs to the end of the line; copy it unchanged.
			end := strings.IndexByte(expr[i:], '\n')
			if end < 0 {
				end = len(expr) - i
			}
			b.WriteString(expr[i : i+end])
			i += end - 1
		case c == '\'':
			j := i + 1
			for j < len(expr) && expr[j] != '\'' {
				if expr[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(expr) {
				// Unterminated: leave it for the jq parser to report.
				b.WriteString(expr[i:])
				return b.String()
			}
			b.WriteByte('"')
			for k := i + 1; k < j; k++ {
				if expr[k] == '\\' {
					b.WriteByte(expr[k])
					k++
					b.WriteByte(expr[k])
					continue
				}
				if expr[k] == '"' {
					b.WriteByte('\\')
				}
				b.WriteByte(expr[k])
			}
			b.WriteByte('"')
			i = j
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
