package mapping

import (
	"fmt"
	"strings"
)

// JQProgram returns the whole mapping as one program for the jq command
// line tool (jq 1.6 or later). Given Backstage entities as JSON input, it
// does what Map does up to the raw field results: it adds
// metadata.identifier, picks the resources by kind, runs the selector and
// every field, and prints one [resourceIndex, [selector, field...]] array
// per resource run. It is what the benchmarks and the differential tests run
// through jq.
func (m *Mapper) JQProgram() string {
	var b strings.Builder
	b.WriteString(prelude)
	if !m.opts.AllowEnv {
		b.WriteString(sandboxPrelude)
	}
	b.WriteString(`(.kind | if type == "string" then ascii_downcase else "" end) as $__pb_kind
| (.metadata.namespace | if type == "string" and . != "" then . else "default" end) as $__pb_ns
| .metadata.identifier = ((.kind + ":" + $__pb_ns + "/" + .metadata.name) | ascii_downcase)
| `)
	var named []string
	for _, k := range m.kinds {
		if k != "*" {
			named = append(named, fmt.Sprintf("$__pb_kind != %q", k))
		}
	}
	for i, c := range m.resources {
		if i > 0 {
			b.WriteString(",\n  ")
		}
		cond := fmt.Sprintf("$__pb_kind == %q", c.kindLower)
		if c.kindLower == "*" {
			cond = "true"
			if len(named) > 0 {
				cond = strings.Join(named, " and ")
			}
		}
		fmt.Fprintf(&b, "(if %s then ", cond)
		if c.items == nil {
			fmt.Fprintf(&b, "[%d, (%s)]", i, c.body)
		} else {
			fmt.Fprintf(&b, "(first(\n%s\n)) as $__pb_items | if ($__pb_items | type) == \"array\" then (", c.itemsSrc)
			if c.itemsDel != nil {
				fmt.Fprintf(&b, ". as $__pb_orig | (try delpaths([path(\n%s\n)]) catch $__pb_orig)", c.itemsSrc)
			} else {
				b.WriteString(".")
			}
			fmt.Fprintf(&b, ") as $__pb_parent | $__pb_items[] as $__pb_it | $__pb_parent | .[%q] = $__pb_it | [%d, (%s)] else empty end", c.res.ItemsToParseName, i, c.body)
		}
		b.WriteString(" else empty end)")
	}
	b.WriteString("\n")
	return b.String()
}
