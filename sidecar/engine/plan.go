package engine

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// Action is what a plan does to one Port entity.
type Action string

// The actions.
const (
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
)

// PlanItem is one planned change, with the reason for it.
type PlanItem struct {
	Action     Action
	Blueprint  string
	Identifier string
	Ref        string
	Reason     string
}

// Plan is the list of changes a pass decided on: a value that can be
// printed (`portbridge sync --once --dry-run`) or applied.
type Plan struct {
	Items []PlanItem
}

// Count returns how many items have the action.
func (p Plan) Count(a Action) int {
	n := 0
	for _, it := range p.Items {
		if it.Action == a {
			n++
		}
	}
	return n
}

// Write prints the plan as an aligned table, sorted by action, blueprint
// and identifier, with a summary line.
func (p Plan) Write(w io.Writer) error {
	items := slices.Clone(p.Items)
	order := map[Action]int{ActionCreate: 0, ActionUpdate: 1, ActionDelete: 2}
	slices.SortFunc(items, func(a, b PlanItem) int {
		if d := order[a.Action] - order[b.Action]; d != 0 {
			return d
		}
		if c := strings.Compare(a.Blueprint, b.Blueprint); c != 0 {
			return c
		}
		return strings.Compare(a.Identifier, b.Identifier)
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tBLUEPRINT\tIDENTIFIER\tFROM\tREASON")
	for _, it := range items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Action, it.Blueprint, it.Identifier, it.Ref, it.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "Plan: %d to create, %d to update, %d to delete.\n", p.Count(ActionCreate), p.Count(ActionUpdate), p.Count(ActionDelete))
	return err
}
