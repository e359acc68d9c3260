package server

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/sidecar/limits"
	"github.com/portbridge/portbridge/sidecar/redact"
)

const (
	// maxFutureSkew is how far in the future an observed_at may lie (clock
	// skew between publisher and sidecar); later ones are rejected.
	maxFutureSkew = 5 * time.Minute
	// maxViolations bounds how many violations one error reports.
	maxViolations = 100
)

// violation is one invalid field of a request.
type violation struct {
	field string // path in the request, e.g. "changes[3].entity_ref"
	desc  string // what is wrong with it
}

// violations collects the invalid fields of one request.
type violations []violation

func (vs *violations) add(field, format string, args ...any) {
	if len(*vs) < maxViolations {
		*vs = append(*vs, violation{field: field, desc: fmt.Sprintf(format, args...)})
	}
}

// err turns the violations into InvalidArgument. The message names the first
// violation (and how many more there are); every violation is attached as a
// google.rpc.BadRequest field violation.
func (vs violations) err() error {
	if len(vs) == 0 {
		return nil
	}
	msg := vs[0].field + ": " + vs[0].desc
	if len(vs) > 1 {
		msg += fmt.Sprintf(" (and %d more invalid fields)", len(vs)-1)
	}
	cerr := connect.NewError(connect.CodeInvalidArgument, errors.New(msg))
	br := &errdetails.BadRequest{}
	for _, v := range vs {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.field, Description: v.desc})
	}
	if d, err := connect.NewErrorDetail(br); err == nil {
		cerr.AddDetail(d)
	}
	return cerr
}

// addLimit records v (a broken bound) at prefix+field, when v is not nil
// (the field path is built only then).
func (vs *violations) addLimit(prefix, field string, v *limits.Violation) {
	if v != nil {
		vs.add(prefix+field+v.Path, "%s", v.Msg)
	}
}

// validator checks requests against the input limits.
type validator struct {
	lim limits.Limits
	now time.Time
}

// validateBatch checks and normalises a batch of changes in place: refs are
// lower-cased, a missing observed_at becomes now. prefix is prepended to
// every field path ("" or "messages[2].").
func (v validator) validateBatch(prefix string, changes []*portbridgev1.Change, source string) violations {
	var vs violations
	vs.addLimit(prefix, "source", limits.TooLong(source, v.lim.MaxSourceBytes, limits.KeyMaxSourceBytes))
	switch {
	case len(changes) == 0:
		vs.add(prefix+"changes", "must not be empty")
		return vs
	case len(changes) > v.lim.MaxChangesPerBatch:
		vs.add(prefix+"changes", "%d changes, over the limit of %d per batch (%s)", len(changes), v.lim.MaxChangesPerBatch, limits.KeyMaxChangesPerBatch)
		return vs
	}
	for i, c := range changes {
		v.validateChange(&vs, fmt.Sprintf("%schanges[%d]", prefix, i), c)
	}
	if len(vs) == 0 {
		for _, c := range changes {
			dropUnknown(c)
		}
	}
	return vs
}

// dropUnknown removes unknown fields (binary protobuf keeps them) from a
// change and every message in it: they would be stored with the change,
// unbounded and unread. (Map entries never keep unknown fields.)
func dropUnknown(c *portbridgev1.Change) {
	clearUnknown(c)
	clearUnknown(c.GetObservedAt())
	if u := c.GetUpserted(); u != nil {
		clearUnknown(u)
		dropUnknownStruct(u.GetEntity())
	}
	clearUnknown(c.GetDeleted())
}

func dropUnknownStruct(s *structpb.Struct) {
	clearUnknown(s)
	for _, v := range s.GetFields() {
		dropUnknownValue(v)
	}
}

func dropUnknownValue(v *structpb.Value) {
	clearUnknown(v)
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		dropUnknownStruct(k.StructValue)
	case *structpb.Value_ListValue:
		clearUnknown(k.ListValue)
		for _, x := range k.ListValue.GetValues() {
			dropUnknownValue(x)
		}
	}
}

// clearUnknown drops m's own unknown fields; m may be a typed nil.
func clearUnknown(m interface{ ProtoReflect() protoreflect.Message }) {
	r := m.ProtoReflect()
	if r.IsValid() && len(r.GetUnknown()) > 0 {
		r.SetUnknown(nil)
	}
}

func (v validator) validateChange(vs *violations, p string, c *portbridgev1.Change) {
	if c == nil {
		vs.add(p, "required")
		return
	}
	now := v.now
	var ref entityRef
	refOK := false
	switch {
	case c.EntityRef == "":
		vs.add(p+".entity_ref", "required")
	case len(c.EntityRef) > v.lim.MaxRefBytes:
		vs.addLimit(p, ".entity_ref", limits.TooLong(c.EntityRef, v.lim.MaxRefBytes, limits.KeyMaxRefBytes))
	default:
		r, err := parseEntityRef(c.EntityRef)
		if err != nil {
			vs.add(p+".entity_ref", "%v", err)
			break
		}
		ref, refOK = r, true
		c.EntityRef = r.String()
	}
	vs.addLimit(p, ".uid", limits.TooLong(c.Uid, v.lim.MaxRefBytes, limits.KeyMaxRefBytes))
	vs.addLimit(p, ".etag", limits.TooLong(c.Etag, v.lim.MaxRefBytes, limits.KeyMaxRefBytes))

	switch {
	case c.ObservedAt == nil:
		c.ObservedAt = timestamppb.New(now)
	case c.ObservedAt.CheckValid() != nil:
		vs.add(p+".observed_at", "invalid timestamp (seconds %d, nanos %d)", c.ObservedAt.GetSeconds(), c.ObservedAt.GetNanos())
	case c.ObservedAt.AsTime().After(now.Add(maxFutureSkew)):
		vs.add(p+".observed_at", "%s is more than %s in the future",
			c.ObservedAt.AsTime().Format(time.RFC3339), maxFutureSkew)
	}

	switch ch := c.Change.(type) {
	case nil:
		vs.add(p+".change", "one of upserted or deleted is required")
	case *portbridgev1.Change_Deleted:
		if ch.Deleted == nil {
			ch.Deleted = &portbridgev1.Deleted{}
		}
	case *portbridgev1.Change_Upserted:
		var entity *structpb.Struct
		if ch.Upserted != nil {
			entity = ch.Upserted.Entity
		}
		kind, ns, name, uid, ok := v.validateEntity(vs, p+".upserted.entity", entity)
		if !ok || !refOK {
			return
		}
		if !strings.EqualFold(kind, ref.kind) {
			vs.add(p+".upserted.entity.kind", "%s does not match entity_ref %s", redact.Quote(kind), redact.Quote(ref.String()))
		}
		if !strings.EqualFold(ns, ref.namespace) {
			vs.add(p+".upserted.entity.metadata.namespace", "%s does not match entity_ref %s", redact.Quote(ns), redact.Quote(ref.String()))
		}
		if !strings.EqualFold(name, ref.name) {
			vs.add(p+".upserted.entity.metadata.name", "%s does not match entity_ref %s", redact.Quote(name), redact.Quote(ref.String()))
		}
		if c.Uid != "" && uid != "" && c.Uid != uid {
			vs.add(p+".uid", "%s does not match upserted.entity.metadata.uid %s", redact.Quote(c.Uid), redact.Quote(uid))
		}
	}
}

// validateEntity checks that a Backstage entity object is within the input
// limits and has a string kind and metadata.name, and an optional string
// metadata.namespace, metadata.uid and metadata.etag. It returns them
// (namespace defaulted) and whether the entity is usable.
func (v validator) validateEntity(vs *violations, p string, entity *structpb.Struct) (kind, namespace, name, uid string, ok bool) {
	if entity == nil {
		vs.add(p, "required")
		return "", "", "", "", false
	}
	if lv := v.lim.CheckStruct(entity); lv != nil {
		vs.addLimit(p, "", lv)
		return "", "", "", "", false
	}
	n := len(*vs)
	kind = requiredString(vs, p+".kind", entity.GetFields()["kind"])
	mv := entity.GetFields()["metadata"]
	meta := mv.GetStructValue()
	if meta == nil {
		if mv == nil {
			vs.add(p+".metadata", "required")
		} else {
			vs.add(p+".metadata", "must be an object")
		}
		return "", "", "", "", false
	}
	name = requiredString(vs, p+".metadata.name", meta.GetFields()["name"])
	namespace = defaultNamespace
	if v, present := meta.GetFields()["namespace"]; present {
		namespace = requiredString(vs, p+".metadata.namespace", v)
	}
	if x, present := meta.GetFields()["uid"]; present {
		uid = requiredString(vs, p+".metadata.uid", x)
	}
	for _, key := range []string{"uid", "etag"} {
		vs.addLimit(p, ".metadata."+key, limits.TooLong(meta.GetFields()[key].GetStringValue(), v.lim.MaxRefBytes, limits.KeyMaxRefBytes))
	}
	return kind, namespace, name, uid, len(*vs) == n
}

// requiredString returns v's string value, or records that it is missing,
// not a string, or empty.
func requiredString(vs *violations, field string, v *structpb.Value) string {
	if v == nil {
		vs.add(field, "required")
		return ""
	}
	s, isString := v.GetKind().(*structpb.Value_StringValue)
	switch {
	case !isString:
		vs.add(field, "must be a string")
		return ""
	case s.StringValue == "":
		vs.add(field, "must not be empty")
		return ""
	}
	return s.StringValue
}
