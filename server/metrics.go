package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portbridge/portbridge/proto/portbridge/v1/portbridgev1connect"
)

// metrics are the server's Prometheus collectors.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
	changes  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	var m metrics
	var err error
	if m.requests, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portbridge_api_requests_total",
		Help: "API calls answered, by procedure, protocol and status code.",
	}, []string{"procedure", "protocol", "code"})); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "portbridge_api_request_duration_seconds",
		Help:    "Time to answer an API call, by procedure.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"procedure"})); err != nil {
		return nil, err
	}
	if m.inFlight, err = register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "portbridge_api_requests_in_flight",
		Help: "API calls being answered, by procedure.",
	}, []string{"procedure"})); err != nil {
		return nil, err
	}
	if m.changes, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portbridge_api_changes_total",
		Help: `Changes received through PublishChanges and StreamChanges, by result ("accepted" or "rejected").`,
	}, []string{"result"})); err != nil {
		return nil, err
	}
	return &m, nil
}

// register registers c, or returns the equal collector already registered
// (a second Server on the same registry shares the series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// knownProcedure bounds the procedure label to the service's procedures.
func knownProcedure(path string) string {
	switch path {
	case portbridgev1connect.BridgeServicePublishChangesProcedure,
		portbridgev1connect.BridgeServiceStreamChangesProcedure,
		portbridgev1connect.BridgeServiceTriggerResyncProcedure,
		portbridgev1connect.BridgeServiceGetStatusProcedure,
		portbridgev1connect.BridgeServicePreviewMappingProcedure:
		return path
	}
	return "unknown"
}

// countRejected counts a call refused before it reached a handler.
func (m *metrics) countRejected(path string, code connect.Code) {
	m.requests.WithLabelValues(knownProcedure(path), "", code.String()).Inc()
}

// observe records one answered call and logs it if it failed.
func (m *metrics) observe(log *slog.Logger, procedure, protocol string, start time.Time, err error) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	elapsed := time.Since(start)
	m.requests.WithLabelValues(procedure, protocol, code).Inc()
	m.duration.WithLabelValues(procedure).Observe(elapsed.Seconds())
	if err == nil {
		return
	}
	level := slog.LevelDebug
	switch connect.CodeOf(err) {
	case connect.CodeInternal, connect.CodeUnavailable, connect.CodeUnknown, connect.CodeDataLoss:
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "rpc failed", "procedure", procedure, "protocol", protocol,
		"code", code, "duration", elapsed, "error", err)
}

// interceptor measures every call: count by code, latency, in flight.
func (m *metrics) interceptor(log *slog.Logger) connect.Interceptor {
	return &metricsInterceptor{m: m, log: log}
}

type metricsInterceptor struct {
	m   *metrics
	log *slog.Logger
}

func (i *metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		proc := req.Spec().Procedure
		g := i.m.inFlight.WithLabelValues(proc)
		g.Inc()
		defer g.Dec()
		start := time.Now()
		resp, err := next(ctx, req)
		i.m.observe(i.log, proc, req.Peer().Protocol, start, err)
		return resp, err
	}
}

func (i *metricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *metricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		proc := conn.Spec().Procedure
		g := i.m.inFlight.WithLabelValues(proc)
		g.Inc()
		defer g.Dec()
		start := time.Now()
		err := next(ctx, conn)
		i.m.observe(i.log, proc, conn.Peer().Protocol, start, err)
		return err
	}
}
