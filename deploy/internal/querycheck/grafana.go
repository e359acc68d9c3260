package querycheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Dashboard is the part of a Grafana dashboard JSON model the checks read.
type Dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
}

// Panel is a dashboard panel; rows hold their panels when collapsed.
type Panel struct {
	ID          int         `json:"id"`
	Type        string      `json:"type"`
	Title       string      `json:"title"`
	Description string      `json:"description"`
	Datasource  *Datasource `json:"datasource"`
	Targets     []Target    `json:"targets"`
	Panels      []Panel     `json:"panels"`
	GridPos     struct {
		H, W, X, Y int
	} `json:"gridPos"`
}

// Target is one query of a panel.
type Target struct {
	RefID        string      `json:"refId"`
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat"`
	Datasource   *Datasource `json:"datasource"`
}

// Datasource names a data source (a uid may be a variable such as
// ${datasource}).
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Variable is a template variable. Query is a string, or an object with a
// "query" string (newer Grafana).
type Variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	AllValue   string          `json:"allValue"`
	IncludeAll bool            `json:"includeAll"`
	Datasource *Datasource     `json:"datasource"`
}

// QueryString is the variable's query text.
func (v Variable) QueryString() (string, error) {
	if len(v.Query) == 0 {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var o struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &o); err != nil {
		return "", fmt.Errorf("variable %s: query is neither a string nor an object with a query: %w", v.Name, err)
	}
	return o.Query, nil
}

// ParseDashboard decodes a dashboard JSON model.
func ParseDashboard(data []byte) (*Dashboard, error) {
	var d Dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("decode the dashboard: %w", err)
	}
	return &d, nil
}

// AllPanels returns every panel, rows and the panels of collapsed rows
// included, in order.
func (d *Dashboard) AllPanels() []Panel {
	var out []Panel
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// Query is one PromQL expression of a dashboard with Grafana's variables
// replaced; Label is set for a variable's label_values(selector, label).
type Query struct {
	Where string
	Expr  string
	Label string
}

// builtinValues stand in for Grafana's built-in variables.
var builtinValues = map[string]string{
	"__rate_interval": "5m", "__interval": "1m", "__range": "6h",
	"__interval_ms": "60000", "__range_s": "21600", "__range_ms": "21600000",
}

var (
	variableRef = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)`)
	labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*,\s*(\w+)\s*\)\s*$`)
	queryResult = regexp.MustCompile(`^\s*query_result\(\s*(.*)\s*\)\s*$`)
)

// Queries returns every PromQL expression of the dashboard: each panel
// target (also inside collapsed rows) and each query variable, with
// Grafana's variables replaced by valid values: built-in intervals by
// durations, the dashboard's query and custom variables by their "All" value
// (allValue, else .*), constants and text boxes by their value. A variable
// the dashboard does not define, or one that cannot stand in a query, is an
// error.
func (d *Dashboard) Queries() ([]Query, error) {
	values := map[string]string{}
	kinds := map[string]string{}
	for _, v := range d.Templating.List {
		kinds[v.Name] = v.Type
		switch v.Type {
		case "query", "custom":
			values[v.Name] = ".*"
			if v.AllValue != "" {
				values[v.Name] = v.AllValue
			}
		case "constant", "textbox":
			q, err := v.QueryString()
			if err != nil {
				return nil, err
			}
			values[v.Name] = q
		}
	}
	var errs []error
	subst := func(where, expr string) string {
		return variableRef.ReplaceAllStringFunc(expr, func(ref string) string {
			m := variableRef.FindStringSubmatch(ref)
			name := m[1] + m[2] + m[3]
			if v, ok := builtinValues[name]; ok {
				return v
			}
			if v, ok := values[name]; ok {
				return v
			}
			if k, ok := kinds[name]; ok {
				errs = append(errs, fmt.Errorf("%s: variable $%s (type %s) cannot stand in a query", where, name, k))
			} else {
				errs = append(errs, fmt.Errorf("%s: variable $%s is not defined by the dashboard", where, name))
			}
			return ref
		})
	}
	var out []Query
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, err := v.QueryString()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		where := "variable " + v.Name
		switch {
		case labelValues.MatchString(q):
			m := labelValues.FindStringSubmatch(q)
			out = append(out, Query{Where: where, Expr: subst(where, m[1]), Label: m[2]})
		case queryResult.MatchString(q):
			out = append(out, Query{Where: where, Expr: subst(where, queryResult.FindStringSubmatch(q)[1])})
		default:
			errs = append(errs, fmt.Errorf("%s: query %q is neither label_values(selector, label) nor query_result(expr)", where, q))
		}
	}
	for _, p := range d.AllPanels() {
		for _, t := range p.Targets {
			where := fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, t.RefID)
			if strings.TrimSpace(t.Expr) == "" {
				errs = append(errs, fmt.Errorf("%s: no expr", where))
				continue
			}
			out = append(out, Query{Where: where, Expr: subst(where, t.Expr)})
		}
	}
	return out, errors.Join(errs...)
}
