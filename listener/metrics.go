package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/olio-dev/olio/descend"
)

// The metric descriptors. Per-worker series carry the label "worker" (the index).
var (
	workerLabel = []string{"worker"}

	descWorkers = prometheus.NewDesc("olio_workers",
		"Workers that own keys (the membership's size).", nil, nil)
	descWorkersReady = prometheus.NewDesc("olio_workers_ready",
		"Member workers whose app is ready.", nil, nil)
	descEpoch = prometheus.NewDesc("olio_membership_epoch",
		"Membership epoch, bumped by every change of the worker count.", nil, nil)
	descServed = prometheus.NewDesc("olio_requests_served_total",
		"Requests answered by the worker's app.", workerLabel, nil)
	descForwardedOut = prometheus.NewDesc("olio_requests_forwarded_out_total",
		"Requests the worker accepted and forwarded to their owner.", workerLabel, nil)
	descForwardedIn = prometheus.NewDesc("olio_requests_forwarded_in_total",
		"Requests the worker received from other workers.", workerLabel, nil)
	descHandedOff = prometheus.NewDesc("olio_connections_handed_off_total",
		"Client connections the worker passed to the owner of their first request.", workerLabel, nil)
	descHandedIn = prometheus.NewDesc("olio_connections_handed_in_total",
		"Client connections the worker received from other workers.", workerLabel, nil)
	descUpgraded = prometheus.NewDesc("olio_upgraded_connections_total",
		"Connections the worker's app upgraded (101, e.g. WebSocket); not counted as requests.", workerLabel, nil)
	descUpgradesOpen = prometheus.NewDesc("olio_upgraded_connections_open",
		"Upgraded connections (e.g. WebSocket) open in the worker now.", workerLabel, nil)
	descBodyTimeouts = prometheus.NewDesc("olio_body_timeouts_total",
		"Request bodies that did not arrive within --body-timeout (answered 408).", workerLabel, nil)
	descWriteTimeouts = prometheus.NewDesc("olio_write_timeouts_total",
		"Connections closed because the client did not read its answer within --body-timeout.", workerLabel, nil)
	descAccessDropped = prometheus.NewDesc("olio_access_log_dropped_total",
		"Access log lines the worker dropped because its log writer fell behind (--access-log).", workerLabel, nil)
	descInFlight = prometheus.NewDesc("olio_requests_in_flight",
		"Requests in the worker's app now.", workerLabel, nil)
	descDuration = prometheus.NewDesc("olio_request_duration_seconds",
		"Time the worker's app took to answer.", workerLabel, nil)
	descRestarts = prometheus.NewDesc("olio_restarts_total",
		"Unexpected exits of the worker's app and router.", workerLabel, nil)
	descRSS = prometheus.NewDesc("olio_resident_memory_bytes",
		"Resident memory of the worker's router and app.", workerLabel, nil)
	descWorkerReady = prometheus.NewDesc("olio_worker_ready",
		"1 when the worker's app is ready, else 0.", workerLabel, nil)
	descCrashLooping = prometheus.NewDesc("olio_worker_crash_looping",
		"1 when the worker's app or router keeps crashing, else 0.", workerLabel, nil)
	descHandoverHold = prometheus.NewDesc("olio_handover_hold_seconds",
		"How long the last hand-over (scale, or a restart of this worker's app) held the keys that moved.", workerLabel, nil)
	// Hot keys (--key-stats on or hashed): shares, never the keys themselves.
	descHotKeyShare = prometheus.NewDesc("olio_hot_key_share",
		"Share of the worker's requests with a key, over the last minute, taken by its hottest key.", workerLabel, nil)
	descImbalance = prometheus.NewDesc("olio_key_imbalance",
		"Requests with a key over the last minute: the busiest worker's rate divided by the workers' mean (1: even).", nil, nil)
)

// collector is a prometheus.Collector that asks the routers for their counters at every
// scrape, so one scrape of the master sees every worker.
type collector struct{ m *Master }

// Describe implements prometheus.Collector.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descWorkers, descWorkersReady, descEpoch, descServed, descForwardedOut, descForwardedIn,
		descHandedOff, descHandedIn, descUpgraded, descUpgradesOpen, descBodyTimeouts, descWriteTimeouts, descAccessDropped,
		descInFlight, descDuration, descRestarts, descRSS, descWorkerReady, descCrashLooping, descHandoverHold,
		descHotKeyShare, descImbalance,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), StatsTimeout)
	defer cancel()
	keys := make(chan KeysReport, 1)
	go func() { keys <- c.m.keys(ctx, 1) }()
	st, stats := c.m.gather(ctx)
	c.collectKeys(ch, <-keys)
	ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(st.Members))
	ch <- prometheus.MustNewConstMetric(descWorkersReady, prometheus.GaugeValue, float64(st.Ready))
	ch <- prometheus.MustNewConstMetric(descEpoch, prometheus.GaugeValue, float64(st.Epoch))
	for i, w := range st.Workers {
		l := strconv.Itoa(w.Index)
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l)
		}
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(w.Restarts), l)
		gauge(descRSS, float64(w.RSSBytes))
		gauge(descWorkerReady, b2f(w.State == string(descend.StateReady)))
		gauge(descCrashLooping, b2f(w.CrashLooping))
		s := stats[i]
		if s == nil {
			continue // no counters from a router that did not answer
		}
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l)
		}
		counter(descServed, s.Served)
		counter(descForwardedOut, s.ForwardedOut)
		counter(descForwardedIn, s.ForwardedIn)
		counter(descHandedOff, s.HandedOut)
		counter(descHandedIn, s.HandedIn)
		counter(descUpgraded, s.Upgraded)
		gauge(descUpgradesOpen, float64(s.UpgradesOpen))
		counter(descBodyTimeouts, s.BodyTimeouts)
		counter(descWriteTimeouts, s.WriteTimeouts)
		counter(descAccessDropped, s.AccessLogDropped)
		gauge(descInFlight, float64(s.InFlight))
		gauge(descHandoverHold, s.LastHold.Seconds())
		if h, err := constHistogram(descDuration, s.Duration, l); err == nil {
			ch <- h
		}
	}
}

// collectKeys adds the hot-key gauges, when keys are counted.
func (c collector) collectKeys(ch chan<- prometheus.Metric, rep KeysReport) {
	if rep.Mode == descend.KeyStatsOff {
		return
	}
	ch <- prometheus.MustNewConstMetric(descImbalance, prometheus.GaugeValue, rep.Imbalance)
	for _, w := range rep.Workers {
		if w.Error == "" {
			ch <- prometheus.MustNewConstMetric(descHotKeyShare, prometheus.GaugeValue, w.HotKeyShare, strconv.Itoa(w.Index))
		}
	}
}

// constHistogram turns a router's histogram snapshot into a Prometheus metric.
func constHistogram(d *prometheus.Desc, h descend.Histogram, labels ...string) (prometheus.Metric, error) {
	if len(h.Bounds) != len(h.Counts) {
		return nil, errors.New("listener: histogram with unequal bounds and counts")
	}
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		buckets[b] = h.Counts[i]
	}
	return prometheus.NewConstHistogram(d, h.Count, h.Sum, buckets, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsServer serves Prometheus text on --metrics ADDR.
type metricsServer struct {
	srv  *http.Server
	addr string // where it listens
	done chan struct{}
}

// serveMetrics binds addr and serves /metrics from a private registry holding only olio's
// collector, and /ready for a front's health check.
func (m *Master) serveMetrics(addr string) (*metricsServer, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collector{m}); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot serve metrics: %w", listenError("--metrics", addr, err))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      m.errorLog(),
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       2 * StatsTimeout,
	}))
	mux.HandleFunc("GET /ready", m.serveReady) // a front's health check
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "olio: Prometheus metrics are at /metrics, readiness for a load balancer at /ready")
	})
	s := &metricsServer{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          m.errorLog(),
		},
		addr: ln.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// close stops the server, giving scrapes in progress a moment, and waits for it.
func (s *metricsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
}
