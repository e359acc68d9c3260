package server

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
)

const (
	// maxFutureSkew is how far in the future an observed_at may lie (clock
	// skew between publisher and sidecar); later ones are rejected.
	maxFutureSkew = 5 * time.Minute
	// maxRefLen bounds an entity ref (Backstage limits kind, namespace and
	// name to 63 characters each).
	maxRefLen = 255
	// maxReasonLen bounds TriggerResync's reason.
	maxReasonLen = 200
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

// validateBatch checks and normalises a batch of changes in place: refs are
// lower-cased, a missing observed_at becomes now. prefix is prepended to
// every field path ("" or "messages[2].").
func validateBatch(prefix string, changes []*portbridgev1.Change, now time.Time) violations {
	var vs violations
	if len(changes) == 0 {
		vs.add(prefix+"changes", "must not be empty")
		return vs
	}
	for i, c := range changes {
		validateChange(&vs, fmt.Sprintf("%schanges[%d]", prefix, i), c, now)
	}
	return vs
}

func validateChange(vs *violations, p string, c *portbridgev1.Change, now time.Time) {
	if c == nil {
		vs.add(p, "required")
		return
	}
	var ref entityRef
	refOK := false
	switch {
	case c.EntityRef == "":
		vs.add(p+".entity_ref", "required")
	case len(c.EntityRef) > maxRefLen:
		vs.add(p+".entity_ref", "longer than %d bytes", maxRefLen)
	default:
		r, err := parseEntityRef(c.EntityRef)
		if err != nil {
			vs.add(p+".entity_ref", "%v", err)
			break
		}
		ref, refOK = r, true
		c.EntityRef = r.String()
	}

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
		kind, ns, name, uid, ok := validateEntity(vs, p+".upserted.entity", entity)
		if !ok || !refOK {
			return
		}
		if !strings.EqualFold(kind, ref.kind) {
			vs.add(p+".upserted.entity.kind", "%q does not match entity_ref %q", kind, ref.String())
		}
		if !strings.EqualFold(ns, ref.namespace) {
			vs.add(p+".upserted.entity.metadata.namespace", "%q does not match entity_ref %q", ns, ref.String())
		}
		if !strings.EqualFold(name, ref.name) {
			vs.add(p+".upserted.entity.metadata.name", "%q does not match entity_ref %q", name, ref.String())
		}
		if c.Uid != "" && uid != "" && c.Uid != uid {
			vs.add(p+".uid", "%q does not match upserted.entity.metadata.uid %q", c.Uid, uid)
		}
	}
}

// validateEntity checks that a Backstage entity object has a string kind and
// metadata.name, and an optional string metadata.namespace and metadata.uid.
// It returns them (namespace defaulted) and whether the entity is usable.
func validateEntity(vs *violations, p string, entity *structpb.Struct) (kind, namespace, name, uid string, ok bool) {
	if entity == nil {
		vs.add(p, "required")
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
	if v, present := meta.GetFields()["uid"]; present {
		uid = requiredString(vs, p+".metadata.uid", v)
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
