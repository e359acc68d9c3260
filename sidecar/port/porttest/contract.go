package porttest

import (
	"net/url"
	"regexp"
	"slices"
	"strconv"
)

// This file holds what each route accepts, in the emulator's own terms,
// following Port's published API reference (port-labs/port-docs,
// docs/api-reference/; see CONTRACT.md for the commit and for where the
// emulator follows observed behaviour instead). A request that does not
// fit is refused with 422 invalid_request before the route's handler runs,
// the way Port validates a request against the route schema first.

var (
	entityIDPattern  = regexp.MustCompile(`^[\p{L}0-9@_.+:\\/=-]+$`)
	bpIDPattern      = regexp.MustCompile(`^[\p{L}0-9@_.+:\\/-]+$`)
	keyNamePattern   = regexp.MustCompile(`^[A-Za-z0-9@_=\\-]+$`)
	mirrorPathRegexp = regexp.MustCompile(`^(?:[A-Za-z0-9@_=\-$]+\.)+?(\w|\$|@|-)*?[^\.]+$`)
)

// Enumerations of the reference.
var (
	propertyTypeNames = []any{"string", "number", "boolean", "object", "array"}
	propertyFormatSet = []any{"date-time", "url", "email", "idn-email", "ipv4", "ipv6", "markdown", "yaml",
		"user", "blueprints", "team", "timer", "proto", "labeled-url"}
	calcFormatSet = []any{"date-time", "url", "email", "idn-email", "ipv4", "ipv6", "markdown", "yaml",
		"user", "team", "proto", "labeled-url"}
	calcItemsFormatSet = []any{"date-time", "url", "email", "idn-format", "ipv4", "ipv6", "markdown", "yaml",
		"user", "team", "timer", "proto", "labeled-url"}
	specSet     = []any{"open-api", "embedded-url", "async-api"}
	colorSet    = []any{"blue", "turquoise", "orange", "purple", "pink", "yellow", "green", "red", "gold", "silver", "paleBlue", "darkGray", "lightGray", "bronze", "lime", "olive", "brown"}
	presetsAll  = []string{"today", "tomorrow", "yesterday", "lastDay", "lastWeek", "last2Weeks", "lastMonth", "last3Months", "last6Months", "last12Months"}
	stringOps   = []string{"=", "!=", "containsAny", "contains", "doesNotContains", "beginsWith", "doesNotBeginsWith", "endsWith", "doesNotEndsWith", "in", "notIn"}
	numberOps   = []string{">", ">=", "<", "<="}
	averageOfs  = []string{"hour", "day", "week", "month", "total"}
	combinators = []any{"and", "or"}
)

func entityIDShape() *shape {
	return &shape{types: []string{"string"}, pattern: entityIDPattern, notDots: true, maxLen: 1000}
}

func keyNames() *shape {
	return &shape{types: []string{"string"}, pattern: keyNamePattern, maxLen: 100}
}

// writeQuery is the search query an entity write may use as its
// identifier, a relation value or its team: groups of `=`, `in` /
// `containsAny` and `contains` rules, nested.
var writeQuery = func() *shape {
	var group *shape
	rules := anyOf(
		closedObject(map[string]*shape{"property": str(), "operator": oneOfValues("="),
			"value": typed("string", "number", "null")}, "property", "operator", "value"),
		closedObject(map[string]*shape{"property": str(), "operator": oneOfValues("in", "containsAny"),
			"value": arrayOf(str())}, "property", "operator", "value"),
		closedObject(map[string]*shape{"property": str(), "operator": oneOfValues("contains"),
			"value": anyOf(str(), arrayOf(str()), typed("null"))}, "property", "operator", "value"),
		&shape{ref: func() *shape { return group }},
	)
	group = closedObject(map[string]*shape{"combinator": oneOfValues(combinators...), "rules": arrayOf(rules)}, "combinator", "rules")
	return group
}()

// contextValue is a value taken from the requesting user's context.
func contextValue() *shape {
	return object(map[string]*shape{"property": str(), "context": strEnum("user", "userTeams")}, "property", "context")
}

func dateTime() *shape { return &shape{types: []string{"string"}, format: "date-time"} }

// searchQuery builds the rule grammar of a search route: v2 is the
// blueprint-scoped search (relation and scorecard rules, no lastDay
// preset, a path-only matchAny); otherwise the global search (also used by
// aggregation properties).
func searchQuery(v2 bool) *shape {
	var group *shape
	prop := oneOf(str(), contextValue())
	presets := presetsAll
	if v2 {
		presets = slices.DeleteFunc(slices.Clone(presetsAll), func(p string) bool { return p == "lastDay" })
	}
	dateRule := closedObject(map[string]*shape{"property": prop, "operator": oneOfValues("between", "notBetween", "="),
		"value": &shape{types: []string{"object"}, oneOf: []*shape{
			object(map[string]*shape{"from": dateTime(), "to": dateTime()}, "from", "to"),
			object(map[string]*shape{"preset": strEnum(presets...)}, "preset"),
			contextValue(),
		}}}, "property", "operator", "value")
	emptyOps := oneOfValues("isEmpty", "isNotEmpty")
	emptyRule := oneOf(closedObject(map[string]*shape{"operator": emptyOps, "property": str()}, "operator", "property"))
	if v2 {
		emptyRule.oneOf = append(emptyRule.oneOf,
			closedObject(map[string]*shape{"operator": emptyOps, "targetProperty": strEnum("$title", "$identifier"), "relation": str()}, "operator", "relation"),
			closedObject(map[string]*shape{"operator": emptyOps, "scorecardRule": str(), "scorecard": str()}, "operator", "scorecard"))
	}
	numberRule := closedObject(map[string]*shape{"property": prop, "operator": oneOfValues(anys(numberOps)...),
		"value": anyOf(number(), dateTime(), contextValue())}, "property", "operator", "value")
	expiredRule := closedObject(map[string]*shape{"operator": oneOfValues("isExpired", "isNotExpired"), "property": str()}, "operator", "property")
	strOp := oneOfValues(anys(stringOps)...)
	var stringRule *shape
	if v2 {
		plain := anyOf(typed("null"), str(), number(), boolean(), arrayOf(str()), dateTime())
		stringRule = oneOf(
			closedObject(map[string]*shape{"property": prop, "operator": strOp, "value": anyOf(append(slices.Clone(plain.anyOf), contextValue())...)}, "property", "operator", "value"),
			closedObject(map[string]*shape{"relation": str(), "targetProperty": strEnum("$title", "$identifier"), "operator": strOp, "value": plain}, "relation", "operator", "value"),
			closedObject(map[string]*shape{"scorecard": str(), "scorecardRule": str(), "operator": strOp, "value": plain}, "scorecard", "operator", "value"))
	} else {
		stringRule = oneOf(closedObject(map[string]*shape{"property": prop, "operator": strOp,
			"value": anyOf(typed("null"), str(), number(), boolean(), dateTime(), arrayOf(str()), arrayOf(number()),
				arrayOf(boolean()), arrayOf(dateTime()), contextValue())}, "property", "operator", "value"))
	}
	relationRule := closedObject(map[string]*shape{"operator": oneOfValues("relatedTo"), "blueprint": str(),
		"value": anyOf(str(), arrayOf(str())), "direction": oneOfValues("upstream", "downstream"), "required": boolean()},
		"operator", "value", "blueprint")
	schemaRule := closedObject(map[string]*shape{
		"propertySchema": closedObject(map[string]*shape{"type": str(), "format": str(),
			"items": object(map[string]*shape{"type": str(), "format": str()}, "type")}, "type"),
		"operator": oneOfValues("=", "!=", "contains"),
		"value":    typed("null", "string", "number", "boolean"),
	}, "operator", "propertySchema")
	hop := anyOf(str(), object(map[string]*shape{"relation": str(), "maxHops": &shape{types: []string{"number"}, min: fptr(1), max: fptr(15)}}))
	path := closedObject(map[string]*shape{"path": arrayOf(hop), "fromBlueprint": str()}, "path")
	var matchAny *shape
	if v2 {
		matchAny = closedObject(map[string]*shape{"property": path, "operator": strEnum("matchAny"),
			"value": anyOf(str(), arrayOf(str()))}, "property", "operator", "value")
	} else {
		matchAny = closedObject(map[string]*shape{"property": oneOf(path, prop), "operator": strEnum("matchAny"),
			"value": anyOf(arrayOf(str()), prop)}, "property", "operator", "value")
	}
	rules := anyOf(dateRule, emptyRule, numberRule, expiredRule, stringRule, relationRule, schemaRule, matchAny,
		&shape{ref: func() *shape { return group }})
	group = closedObject(map[string]*shape{"combinator": oneOfValues(combinators...), "rules": arrayOf(rules)}, "combinator", "rules")
	return group
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

var (
	globalQuery    = searchQuery(false)
	blueprintQuery = searchQuery(true)
)

// Entity write bodies.
var (
	relationValue = anyOf(entityIDShape(), arrayOf(&shape{types: []string{"string"}, pattern: entityIDPattern, notDots: true}),
		typed("null"), writeQuery)

	createEntityBody = object(map[string]*shape{
		"identifier": oneOf(entityIDShape(), writeQuery),
		"title":      str(),
		"icon":       str(),
		"team":       oneOf(str(), arrayOf(str()), writeQuery),
		"properties": typed("object"),
		"relations":  mapOf(nil, relationValue),
	})
	putEntityBody = object(map[string]*shape{
		"identifier": entityIDShape(),
		"title":      str(),
		"icon":       str(),
		"team":       oneOf(str(), arrayOf(str()), writeQuery),
		"properties": typed("object"),
		"relations":  mapOf(nil, relationValue),
	})
	patchEntityBody = closedObject(map[string]*shape{
		"identifier": entityIDShape(),
		"title":      typed("string", "null"),
		"icon":       typed("string", "null"),
		"team":       oneOf(typed("string", "null"), arrayOf(str()), writeQuery),
		"properties": mapOf(&shape{types: []string{"string"}, pattern: keyNamePattern}, nil),
		"relations":  mapOf(nil, relationValue),
	})
	bulkBody = closedObject(map[string]*shape{
		"entities": {types: []string{"array"}, items: createEntityBody, minItems: 1, maxItems: 20},
	}, "entities")
	bulkDeleteBody = closedObject(map[string]*shape{
		"entities": {types: []string{"array"}, items: str(), minItems: 1, maxItems: 100},
	}, "entities")
	blueprintSearchBody = closedObject(map[string]*shape{
		"query":   blueprintQuery,
		"include": arrayOf(str()),
		"exclude": arrayOf(str()),
		"limit":   {types: []string{"number"}, min: fptr(1), max: fptr(1000)},
		"from":    str(),
	})
	tokenBody = closedObject(map[string]*shape{"clientId": str(), "clientSecret": str()}, "clientId", "clientSecret")
	// datasourceBody is the undocumented body Port's integrations send to
	// list their entities (Ocean, the Kubernetes exporter).
	datasourceBody = closedObject(map[string]*shape{
		"datasource_prefix": str(), "datasource_suffix": str(),
		"limit":  {types: []string{"number"}, min: fptr(1), max: fptr(10000)},
		"from":   str(),
		"before": dateTime(),
	})
)

// Blueprint bodies: create (POST), replace (PUT) and update (PATCH).
var (
	createBlueprintBody = blueprintBody(true, "identifier", "title", "schema")
	putBlueprintBody    = blueprintBody(true, "title", "schema")
	patchBlueprintBody  = blueprintBody(false)
)

func specAuthentication() *shape {
	return closedObject(map[string]*shape{"clientId": str(), "authorizationUrl": {types: []string{"string"}, format: "url"},
		"tokenUrl": {types: []string{"string"}, format: "url"}, "authorizationScope": arrayOf(str())},
		"clientId", "authorizationUrl", "tokenUrl")
}

func blueprintBody(propertyTypeRequired bool, required ...string) *shape {
	prop := object(map[string]*shape{
		"title": strMax(100), "description": str(), "icon": str(),
		"type": oneOfValues(propertyTypeNames...), "format": oneOfValues(propertyFormatSet...),
		"spec": oneOfValues(specSet...), "specAuthentication": specAuthentication(),
	})
	if propertyTypeRequired {
		prop.required = []string{"type"}
	}
	schema := closedObject(map[string]*shape{"properties": mapOf(keyNames(), prop), "required": arrayOf(str())}, "properties")
	calc := closedObject(map[string]*shape{
		"title": strMax(100), "description": str(), "icon": str(), "calculation": str(),
		"type": oneOfValues(propertyTypeNames...), "format": oneOfValues(calcFormatSet...), "spec": oneOfValues(specSet...),
		"specAuthentication": specAuthentication(), "colorized": boolean(), "colors": mapOf(nil, oneOfValues(colorSet...)),
		"items": object(map[string]*shape{"type": oneOfValues(propertyTypeNames...), "format": oneOfValues(calcItemsFormatSet...)}),
	}, "calculation", "type")
	mirror := closedObject(map[string]*shape{"path": {types: []string{"string"}, pattern: mirrorPathRegexp}, "title": strMax(100)}, "path")
	byEntities := strEnum("entities")
	byProperty := strEnum("property")
	calcSpec := &shape{types: []string{"object"}, oneOf: []*shape{
		oneOf(
			closedObject(map[string]*shape{"func": oneOfValues("count"), "calculationBy": byEntities}, "func", "calculationBy"),
			closedObject(map[string]*shape{"func": oneOfValues("average"), "measureTimeBy": str(), "averageOf": strEnum(averageOfs...),
				"calculationBy": byEntities}, "func", "calculationBy", "averageOf")),
		oneOf(
			closedObject(map[string]*shape{"func": strEnum("sum", "min", "max", "median"), "property": str(), "calculationBy": byProperty},
				"func", "property", "calculationBy"),
			closedObject(map[string]*shape{"func": oneOfValues("average"), "measureTimeBy": str(), "averageOf": strEnum(averageOfs...),
				"property": str(), "calculationBy": byProperty}, "func", "property", "calculationBy", "averageOf")),
	}}
	agg := closedObject(map[string]*shape{
		"title": strMax(100), "description": str(), "icon": str(), "type": oneOfValues("number"), "target": str(),
		"calculationSpec": calcSpec, "query": globalQuery,
		"pathFilter": {types: []string{"array"}, maxItems: 1, items: closedObject(map[string]*shape{
			"path": {types: []string{"array"}, items: str(), minItems: 1}, "fromBlueprint": str()}, "path")},
	}, "title", "target", "calculationSpec")
	relation := closedObject(map[string]*shape{"title": strMax(100), "target": str(), "required": boolean(), "many": boolean(),
		"description": str(), "type": str()}, "target", "required", "many")
	return object(map[string]*shape{
		"identifier":  {types: []string{"string"}, pattern: bpIDPattern, notDots: true, maxLen: 100},
		"title":       {types: []string{"string"}, minLen: 1, maxLen: 100},
		"description": strMax(200),
		"icon":        str(),
		"ownership": anyOf(
			closedObject(map[string]*shape{"type": strEnum("Inherited"), "path": str(), "title": strMax(100)}, "type", "path"),
			closedObject(map[string]*shape{"type": strEnum("Direct"), "title": strMax(100)}, "type")),
		"schema":                schema,
		"calculationProperties": mapOf(keyNames(), calc),
		"mirrorProperties":      mapOf(keyNames(), mirror),
		"aggregationProperties": mapOf(keyNames(), agg),
		"relations":             mapOf(keyNames(), relation),
		"changelogDestination": oneOf(
			closedObject(map[string]*shape{"type": strEnum("WEBHOOK"), "agent": boolean(), "url": {types: []string{"string"}, format: "uri"}}, "url", "type"),
			closedObject(map[string]*shape{"type": strEnum("KAFKA")}, "type")),
	}, required...)
}

// param describes one query parameter of a route.
type param struct {
	kind     string   // "bool", "string", "number", "enum", "array"
	values   []string // enum values (also for the items of an array)
	min, max *float64 // number bounds
}

var (
	boolParam   = param{kind: "bool"}
	stringParam = param{kind: "string"}
	arrayParam  = param{kind: "array"}
)

// Query parameters of the routes.
var (
	entityWriteParams = map[string]param{"upsert": boolParam, "merge": boolParam, "validation_only": boolParam,
		"create_missing_related_entities": boolParam, "run_id": stringParam}
	entityUpdateParams = map[string]param{"create_missing_related_entities": boolParam, "run_id": stringParam}
	entityDeleteParams = map[string]param{"delete_dependents": boolParam, "run_id": stringParam}
	entityReadParams   = map[string]param{"exclude_calculated_properties": boolParam, "include": arrayParam, "exclude": arrayParam,
		"attach_title_to_relation": boolParam, "attach_identifier_to_title_mirror_properties": boolParam}
	entityListParams = with(entityReadParams, "allow_partial_results", boolParam)
	deleteAllParams  = map[string]param{"run_id": stringParam, "delete_blueprint": boolParam}
)

func with(base map[string]param, name string, p param) map[string]param {
	out := make(map[string]param, len(base)+1)
	for k, v := range base {
		out[k] = v
	}
	out[name] = p
	return out
}

// checkQuery validates the declared query parameters (others are ignored,
// as Port ignores the extra parameters its integrations send). Booleans
// must be the strings true or false; a parameter that is not an array may
// appear once.
func checkQuery(specs map[string]param, q url.Values) *apiError {
	for name, p := range specs {
		vals, ok := q[name]
		if !ok {
			continue
		}
		where := "querystring/" + name
		if p.kind != "array" && len(vals) > 1 {
			return invalid("%s must be %s, not a list", where, p.kind)
		}
		for _, v := range vals {
			switch p.kind {
			case "bool":
				if v != "true" && v != "false" {
					return invalid("%s must be boolean", where)
				}
			case "number":
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return invalid("%s must be number", where)
				}
				if p.min != nil && f < *p.min || p.max != nil && f > *p.max {
					return invalid("%s must be between %v and %v", where, *p.min, *p.max)
				}
			case "enum", "array":
				if len(p.values) > 0 && !slices.Contains(p.values, v) {
					return invalid("%s must be equal to one of the allowed values %v", where, p.values)
				}
			}
		}
	}
	return nil
}

// checkBody validates a decoded JSON body; the message names the place.
func checkBody(s *shape, body any) *apiError {
	if err := s.check(body, "body"); err != nil {
		return invalid("%s", err.Error())
	}
	return nil
}
