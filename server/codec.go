package server

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// strictJSONCodec is Connect's JSON codec without DiscardUnknown: a JSON
// request with a field the schema does not know fails with InvalidArgument
// instead of being silently ignored (a misspelt "fullSnapshot" must not pass).
// Binary protobuf keeps its usual tolerance of unknown fields.
type strictJSONCodec struct{ name string }

func (c strictJSONCodec) Name() string { return c.name }

func (c strictJSONCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal %T: not a protobuf message", v)
	}
	return protojson.Marshal(m)
}

func (c strictJSONCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal into %T: not a protobuf message", v)
	}
	if len(data) == 0 {
		return errors.New("empty body is not a JSON object")
	}
	if err := protojson.Unmarshal(data, m); err != nil {
		return fmt.Errorf("unmarshal JSON into %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return nil
}
