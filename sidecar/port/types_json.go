package port

import (
	"encoding/json"
	"fmt"
)

// blueprintKnown lists the blueprint keys modelled by Blueprint's fields; any
// other key round-trips through Extra.
var blueprintKnown = map[string]bool{
	"identifier": true, "title": true, "description": true, "icon": true,
	"schema": true, "relations": true,
}

// propertyKnown lists the property keys modelled by Property's fields.
var propertyKnown = map[string]bool{
	"type": true, "title": true, "description": true, "format": true,
	"spec": true, "enum": true, "items": true, "default": true,
}

// MarshalJSON encodes the blueprint with its Extra keys inlined.
func (b Blueprint) MarshalJSON() ([]byte, error) {
	type plain Blueprint
	return marshalWithExtra(plain(b), b.Extra, blueprintKnown)
}

// UnmarshalJSON decodes a blueprint, keeping unmodelled keys in Extra.
func (b *Blueprint) UnmarshalJSON(data []byte) error {
	type plain Blueprint
	var p plain
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	extra, err := extraKeys(data, blueprintKnown)
	if err != nil {
		return fmt.Errorf("decoding blueprint %q: %w", p.Identifier, err)
	}
	p.Extra = extra
	*b = Blueprint(p)
	return nil
}

// MarshalJSON encodes the property with its Extra keys inlined.
func (p Property) MarshalJSON() ([]byte, error) {
	type plain Property
	return marshalWithExtra(plain(p), p.Extra, propertyKnown)
}

// UnmarshalJSON decodes a property, keeping unmodelled keys in Extra.
func (p *Property) UnmarshalJSON(data []byte) error {
	type plain Property
	var q plain
	if err := json.Unmarshal(data, &q); err != nil {
		return err
	}
	extra, err := extraKeys(data, propertyKnown)
	if err != nil {
		return err
	}
	q.Extra = extra
	*p = Property(q)
	return nil
}

// marshalWithExtra encodes v (a struct without custom marshalling) and adds
// the keys of extra that do not collide with modelled keys.
func marshalWithExtra(v any, extra map[string]any, known map[string]bool) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil || len(extra) == 0 {
		return data, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	for k, x := range extra {
		if known[k] {
			continue
		}
		raw, err := json.Marshal(x)
		if err != nil {
			return nil, fmt.Errorf("encoding extra key %q: %w", k, err)
		}
		m[k] = raw
	}
	return json.Marshal(m)
}

// extraKeys returns the top-level keys of the JSON object data that are not
// in known, or nil when there are none.
func extraKeys(data []byte, known map[string]bool) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	var extra map[string]any
	for k, v := range m {
		if known[k] {
			continue
		}
		if extra == nil {
			extra = map[string]any{}
		}
		extra[k] = v
	}
	return extra, nil
}
