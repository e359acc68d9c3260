package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/proto/portbridge/v1/portbridgev1connect"
	"github.com/portbridge/portbridge/sidecar/limits"
)

// service implements the BridgeService on top of the Backend.
type service struct {
	s *Server
}

var _ portbridgev1connect.BridgeServiceHandler = (*service)(nil)

func (h *service) PublishChanges(ctx context.Context, req *connect.Request[portbridgev1.PublishChangesRequest]) (*connect.Response[portbridgev1.PublishChangesResponse], error) {
	msg := req.Msg
	if err := h.validator().validateBatch("", msg.Changes, msg.Source).err(); err != nil {
		h.s.metrics.changes.WithLabelValues("rejected").Add(float64(len(msg.Changes)))
		return nil, err
	}
	depth, err := h.s.backend.Publish(ctx, msg.Changes, msg.FullSnapshot, msg.Source)
	if err != nil {
		return nil, backendError(fmt.Sprintf("store %d changes", len(msg.Changes)), err, connect.CodeUnavailable)
	}
	h.s.metrics.changes.WithLabelValues("accepted").Add(float64(len(msg.Changes)))
	return connect.NewResponse(&portbridgev1.PublishChangesResponse{
		Accepted:   uint32(len(msg.Changes)),
		QueueDepth: depth,
	}), nil
}

// StreamChanges stores every message as its own batch as it arrives, so a
// failure leaves the messages before it stored.
func (h *service) StreamChanges(ctx context.Context, stream *connect.ClientStream[portbridgev1.StreamChangesRequest]) (*connect.Response[portbridgev1.StreamChangesResponse], error) {
	var resp portbridgev1.StreamChangesResponse
	var source string
	for stream.Receive() {
		msg := stream.Msg()
		idx := resp.Messages
		if idx == 0 {
			source = msg.Source
		}
		resp.Messages++
		if err := h.validator().validateBatch(fmt.Sprintf("messages[%d].", idx), msg.Changes, msg.Source).err(); err != nil {
			h.s.metrics.changes.WithLabelValues("rejected").Add(float64(len(msg.Changes)))
			return nil, err
		}
		depth, err := h.s.backend.Publish(ctx, msg.Changes, msg.FullSnapshot, source)
		if err != nil {
			return nil, backendError(fmt.Sprintf("store message %d (%d changes)", idx, len(msg.Changes)), err, connect.CodeUnavailable)
		}
		h.s.metrics.changes.WithLabelValues("accepted").Add(float64(len(msg.Changes)))
		resp.Accepted += uint32(len(msg.Changes))
		resp.QueueDepth = depth
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	if resp.Messages == 0 {
		return nil, violations{{field: "messages", desc: "the stream has no messages"}}.err()
	}
	return connect.NewResponse(&resp), nil
}

func (h *service) TriggerResync(ctx context.Context, req *connect.Request[portbridgev1.TriggerResyncRequest]) (*connect.Response[portbridgev1.TriggerResyncResponse], error) {
	var vs violations
	vs.addLimit("", "reason", limits.TooLong(req.Msg.Reason, h.s.cfg.Limits.MaxReasonBytes, limits.KeyMaxReasonBytes))
	if err := vs.err(); err != nil {
		return nil, err
	}
	id, running, err := h.s.backend.TriggerResync(ctx, req.Msg.Reason, req.Msg.Verify)
	if err != nil {
		return nil, backendError("start resync", err, connect.CodeUnavailable)
	}
	return connect.NewResponse(&portbridgev1.TriggerResyncResponse{ResyncId: id, AlreadyRunning: running}), nil
}

func (h *service) GetStatus(ctx context.Context, _ *connect.Request[portbridgev1.GetStatusRequest]) (*connect.Response[portbridgev1.GetStatusResponse], error) {
	st, err := h.s.backend.Status(ctx)
	if err != nil {
		return nil, backendError("read status", err, connect.CodeInternal)
	}
	if st == nil {
		st = &portbridgev1.GetStatusResponse{}
	}
	if st.Version == "" {
		st.Version = h.s.cfg.Version
	}
	return connect.NewResponse(st), nil
}

func (h *service) PreviewMapping(ctx context.Context, req *connect.Request[portbridgev1.PreviewMappingRequest]) (*connect.Response[portbridgev1.PreviewMappingResponse], error) {
	var vs violations
	vs.addLimit("", "mapping_yaml", limits.TooLong(req.Msg.MappingYaml, h.s.cfg.Limits.MaxMappingYAMLBytes, limits.KeyMaxMappingYAMLBytes))
	h.validator().validateEntity(&vs, "entity", req.Msg.Entity)
	if err := vs.err(); err != nil {
		return nil, err
	}
	out, err := h.s.backend.PreviewMapping(ctx, req.Msg.Entity.AsMap(), req.Msg.MappingYaml)
	if err != nil {
		return nil, backendError("preview mapping", err, connect.CodeInternal)
	}
	if out == nil {
		out = &portbridgev1.PreviewMappingResponse{}
	}
	return connect.NewResponse(out), nil
}

func (h *service) validator() validator {
	return validator{lim: h.s.cfg.Limits, now: time.Now()}
}

// backendError gives a Backend error its RPC code: a *connect.Error keeps its
// own, ErrUnimplemented, ErrInvalidArgument and context errors get theirs,
// anything else gets fallback. what says what the server was doing.
func backendError(what string, err error, fallback connect.Code) error {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		return cerr
	}
	code := fallback
	switch {
	case errors.Is(err, ErrUnimplemented):
		code = connect.CodeUnimplemented
	case errors.Is(err, ErrInvalidArgument):
		code = connect.CodeInvalidArgument
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	}
	return connect.NewError(code, fmt.Errorf("%s: %w", what, err))
}
