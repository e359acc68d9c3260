package mapping

import (
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Position is a 1-based line and column in a mapping document (column 0:
// unknown).
type Position struct {
	Line, Column int
}

// source is the text of a mapping document, kept to turn an offset inside a
// scalar's decoded value (where gojq reports an error) into the line and
// column of that character in the file, whatever the scalar's style: plain
// or quoted scalars fold line breaks into spaces and drop indentation,
// quoted ones have escapes (” in single quotes, \" in double quotes), block
// scalars start on the line after their indicator and drop the block's
// indentation.
type source struct {
	lines []string
}

func newSource(data []byte) *source {
	return &source{lines: strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")}
}

// schar is one character of the document with its position.
type schar struct {
	c         byte
	line, col int
}

// region returns the characters of the scalar that starts at start: for a
// block scalar the content lines without the block's indentation, each
// followed by '\n'; for a flow scalar everything from its first character
// to the end of the document (the alignment stops when the value ends).
func (s *source) region(start Position, style yaml.Style) []schar {
	var out []schar
	if start.Line < 1 || start.Line > len(s.lines) {
		return nil
	}
	if style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		indent := -1
		for ln := start.Line + 1; ln <= len(s.lines); ln++ {
			text := s.lines[ln-1]
			trimmed := strings.TrimLeft(text, " ")
			if trimmed == "" {
				out = append(out, schar{'\n', ln, len(text) + 1})
				continue
			}
			lead := len(text) - len(trimmed)
			if indent < 0 {
				indent = lead
			}
			if lead < indent {
				break // the block ended
			}
			for i := indent; i < len(text); i++ {
				out = append(out, schar{text[i], ln, i + 1})
			}
			out = append(out, schar{'\n', ln, len(text) + 1})
		}
		return out
	}
	for ln := start.Line; ln <= len(s.lines); ln++ {
		text := s.lines[ln-1]
		from := 0
		if ln == start.Line {
			from = min(max(start.Column-1, 0), len(text))
		}
		for i := from; i < len(text); i++ {
			out = append(out, schar{text[i], ln, i + 1})
		}
		out = append(out, schar{'\n', ln, len(text) + 1})
	}
	return out
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

// position returns where in the document the byte at offset off of value
// (the scalar's decoded text, which starts at start with style) is. Each
// value character is matched to the next equal document character;
// characters YAML drops (quotes, escape backslashes, indentation, a
// doubled ' in single quotes) are skipped, and a space that YAML made from
// a line break matches that line break.
func (s *source) position(start Position, style yaml.Style, value string, off int) Position {
	if s == nil {
		return start
	}
	reg := s.region(start, style)
	if len(reg) == 0 {
		return start
	}
	off = min(max(off, 0), len(value))
	p := 0
	if style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 && (reg[0].c == '\'' || reg[0].c == '"') {
		p = 1 // the opening quote
	}
	double := style&yaml.DoubleQuotedStyle != 0
	last := Position{reg[p%len(reg)].line, reg[p%len(reg)].col}
	for i := 0; i <= off && i < len(value) && p < len(reg); i++ {
		c := value[i]
		for p < len(reg) {
			sc := reg[p].c
			if double && sc == '\\' && p+1 < len(reg) {
				if reg[p+1].c == '\n' { // an escaped line break yields nothing
					p += 2
					continue
				}
				// One escape sequence is one character of the value.
				n, size := escapeLen(reg, p)
				last = Position{reg[p].line, reg[p].col}
				p += n
				i += size - 1
				goto next
			}
			if sc == c {
				break
			}
			if c == ' ' && sc == '\n' {
				break // a folded line break
			}
			p++
		}
		if p >= len(reg) {
			break
		}
		last = Position{reg[p].line, reg[p].col}
		if reg[p].c == '\n' && c == ' ' {
			// The fold eats the line break and the next line's indentation.
			p++
			for p < len(reg) && isBlank(reg[p].c) {
				p++
			}
		} else {
			p++
		}
	next:
	}
	return last
}

// escapeLen returns how many document characters the double-quoted escape
// at reg[p] spans and how many bytes of the value it yields.
func escapeLen(reg []schar, p int) (n, size int) {
	digits := map[byte]int{'x': 2, 'u': 4, 'U': 8}[reg[p+1].c]
	if digits == 0 {
		return 2, 1
	}
	if p+2+digits > len(reg) {
		return len(reg) - p, 1
	}
	hex := make([]byte, digits)
	for i := range hex {
		hex[i] = reg[p+2+i].c
	}
	r, err := strconv.ParseUint(string(hex), 16, 32)
	if err != nil || reg[p+1].c == 'x' {
		return 2 + digits, 1
	}
	return 2 + digits, max(utf8.RuneLen(rune(r)), 1)
}

// exprToRaw maps an offset in a quote-normalised expression back to the
// expression as written (normalizeQuotes turns '…' into "…" and escapes
// inner double quotes, so only inserted backslashes differ in length).
func exprToRaw(raw, expr string, off int) int {
	i, j := 0, 0
	for i < off && i < len(expr) && j < len(raw) {
		if expr[i] == raw[j] || (expr[i] == '"' && raw[j] == '\'') {
			j++
		}
		i++
	}
	return j
}

// yamlLine finds the line "line N: " of a go-yaml error message.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// maxScanLines bounds the documents whose syntax errors are located by
// re-parsing prefixes (quadratic in the line count).
const maxScanLines = 5000

// syntaxErrorPosition locates a YAML syntax error. go-yaml's messages name
// the line where the enclosing construct started, 0-based for parser
// errors, so the line is found again here: the line after the longest
// prefix of complete lines that still parses, among prefixes after which
// every longer prefix fails too (a valid multi-line flow collection or
// quoted string fails only until it is closed). The column is that line's
// first non-blank character. The message keeps go-yaml's text without its
// line.
func syntaxErrorPosition(data []byte, err error) (Position, string) {
	msg := yamlLine.ReplaceAllString(err.Error(), "")
	msg = strings.TrimPrefix(msg, "yaml: ")
	lines := strings.SplitAfter(string(data), "\n")
	if len(lines) <= maxScanLines {
		ends := make([]int, len(lines)+1)
		for i, l := range lines {
			ends[i+1] = ends[i] + len(l)
		}
		for k := len(lines) - 1; k >= 0; k-- {
			var n yaml.Node
			if yaml.Unmarshal(data[:ends[k]], &n) == nil {
				l := lines[k]
				col := len(l) - len(strings.TrimLeft(l, " ")) + 1
				return Position{Line: k + 1, Column: col}, msg
			}
		}
	}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return Position{Line: n}, msg
	}
	return Position{}, msg
}
