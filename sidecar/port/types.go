package port

// Entity is a Port entity as sent to and read from Port's API. Optional
// fields are omitted from JSON when empty so that a mapped entity hashes and
// encodes the same way every time.
type Entity struct {
	// Identifier is the entity's id within its blueprint. It is a string, or
	// a search-query object when a mapping identifies entities by property.
	Identifier any `json:"identifier,omitempty"`
	// Title is the display name.
	Title string `json:"title,omitempty"`
	// Icon is an icon name.
	Icon string `json:"icon,omitempty"`
	// Team is a string, a list of strings, or a search query.
	Team any `json:"team,omitempty"`
	// Blueprint is set on entities read from Port; it is never sent in
	// request bodies (the blueprint is in the URL).
	Blueprint string `json:"blueprint,omitempty"`
	// Properties are the blueprint's property values.
	Properties map[string]any `json:"properties,omitempty"`
	// Relations map relation ids to a target identifier, a list of them,
	// null, or a search query.
	Relations map[string]any `json:"relations,omitempty"`
}

// Blueprint is a Port blueprint: the schema of a kind of entity.
type Blueprint struct {
	Identifier  string              `json:"identifier"`
	Title       string              `json:"title,omitempty"`
	Description string              `json:"description,omitempty"`
	Icon        string              `json:"icon,omitempty"`
	Schema      BlueprintSchema     `json:"schema"`
	Relations   map[string]Relation `json:"relations,omitempty"`
	// Extra holds the keys this type does not model (mirrorProperties,
	// calculationProperties, ownership, ...), passed through unchanged.
	Extra map[string]any `json:"-"`
}

// BlueprintSchema is the JSON-schema part of a blueprint.
type BlueprintSchema struct {
	Properties map[string]Property `json:"properties"`
	Required   []string            `json:"required,omitempty"`
}

// Property is one blueprint property definition. Keys Port accepts that are
// not modelled here (minLength, pattern, ...) are kept in Extra.
type Property struct {
	Type        string         `json:"type"`
	Title       string         `json:"title,omitempty"`
	Description string         `json:"description,omitempty"`
	Format      string         `json:"format,omitempty"`
	Spec        string         `json:"spec,omitempty"`
	Enum        []any          `json:"enum,omitempty"`
	Items       map[string]any `json:"items,omitempty"`
	Default     any            `json:"default,omitempty"`
	Extra       map[string]any `json:"-"`
}

// Relation is one blueprint relation definition.
type Relation struct {
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
	Target      string `json:"target"`
	Required    bool   `json:"required"`
	Many        bool   `json:"many"`
}
