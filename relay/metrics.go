package relay

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// metrics are a node's Prometheus metrics, on the node's own registry
// (Node.Registry), never the global one. Every name starts with cairn_relay_.
type metrics struct {
	reg *prometheus.Registry

	requests      *prometheus.CounterVec   // by protocol
	rejects       *prometheus.CounterVec   // by protocol and status
	deposits      *prometheus.CounterVec   // by result: stored, duplicate
	depositLat    prometheus.Histogram     // frame read → answer written
	appendBatch   prometheus.Histogram     // deposits per AppendMany
	syncs         prometheus.Counter       // completed syncs
	syncEntries   prometheus.Counter       // entries sent by sync
	syncLat       prometheus.Histogram     // whole sync
	pushes        prometheus.Counter       // entries pushed to subscribers
	pushLat       prometheus.Histogram     // stored → written to a subscriber
	slowConsumers prometheus.Counter       // subscribers dropped
	subscribers   prometheus.Gauge         // live subscriptions
	acked         prometheus.Counter       // entries deleted by acks
	authFailures  *prometheus.CounterVec   // by status
	streamsOpen   *prometheus.GaugeVec     // by protocol
	latency       *prometheus.HistogramVec // one-shot requests by protocol

	// Replication.
	replicated        *prometheus.CounterVec // replicate items by outcome
	replicateDropped  prometheus.Counter     // forwarding items dropped (left to anti-entropy)
	reconciled        *prometheus.CounterVec // items received by reconciliation, by outcome
	reconcileSessions *prometheus.CounterVec // mailbox sessions completed, by role
	reconcileBytes    *prometheus.CounterVec // frame bytes of initiated reconcile streams, by direction
	lookups           *prometheus.CounterVec // replica-set computations, by source
}

// latencyBuckets span 50 µs to ~3 s.
var latencyBuckets = prometheus.ExponentialBuckets(50e-6, 2, 17)

func newMetrics(stats func() store.Stats, replay func() float64, peers func() float64) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_relay_requests_total", Help: "Requests (streams, and deposits) received, by protocol.",
		}, []string{"protocol"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_relay_rejects_total", Help: "Requests answered with a status other than OK, by protocol and status.",
		}, []string{"protocol", "reason"}),
		deposits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_relay_deposits_total", Help: "Deposits accepted, by result (stored, duplicate).",
		}, []string{"result"}),
		depositLat: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cairn_relay_deposit_seconds", Help: "Time from reading a deposit to writing its answer.", Buckets: latencyBuckets,
		}),
		appendBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cairn_relay_append_batch_size", Help: "Deposits appended together by one stream.", Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		syncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_relay_syncs_total", Help: "Syncs served to their last page.",
		}),
		syncEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_relay_sync_entries_total", Help: "Entries sent in sync pages.",
		}),
		syncLat: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cairn_relay_sync_seconds", Help: "Duration of a sync stream.", Buckets: latencyBuckets,
		}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_relay_pushes_total", Help: "Entries pushed to subscribers.",
		}),
		pushLat: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cairn_relay_push_seconds", Help: "Time from an entry's commit to its push being written.", Buckets: latencyBuckets,
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_relay_slow_consumers_total", Help: "Subscribers dropped with SLOW_CONSUMER.",
		}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cairn_relay_subscribers", Help: "Live subscriptions.",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_relay_acked_total", Help: "Entries deleted by acks.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_relay_auth_failures_total", Help: "Authenticated requests refused, by status.",
		}, []string{"reason"}),
		streamsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cairn_relay_streams", Help: "Open inbound streams of cairn protocols, by protocol.",
		}, []string{"protocol"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cairn_relay_request_seconds", Help: "Duration of one-request streams, by protocol.", Buckets: latencyBuckets,
		}, []string{"protocol"}),
		replicated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_relay_replicated_total", Help: "Replicated entries, by outcome: sent (and acknowledged), received, duplicate, refused_<STATUS>.",
		}, []string{"result"}),
		replicateDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cairn_relay_replicate_dropped_total", Help: "Entries and tombstones not forwarded (full queue, unreachable replica); anti-entropy reconciles their mailboxes.",
		}),
		reconciled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_relay_reconciled_total", Help: "Items received by anti-entropy, by outcome: received, duplicate, tombstone, refused_<STATUS>.",
		}, []string{"result"}),
		reconcileSessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_relay_reconcile_sessions_total", Help: "Mailboxes reconciled with a replica, by role (initiated, answered), and summary exchanges (summary_initiated, summary_answered).",
		}, []string{"role"}),
		reconcileBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_relay_reconcile_bytes_total", Help: "Frame bytes of the reconcile streams this relay initiated, by direction.",
		}, []string{"direction"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cairn_relay_replica_lookups_total", Help: "Replica sets computed, by source (dht lookup, routing-table estimate).",
		}, []string{"source"}),
	}
	reg.MustRegister(m.requests, m.rejects, m.deposits, m.depositLat, m.appendBatch, m.syncs,
		m.syncEntries, m.syncLat, m.pushes, m.pushLat, m.slowConsumers, m.subscribers, m.acked,
		m.authFailures, m.streamsOpen, m.latency, m.replicated, m.replicateDropped, m.reconciled,
		m.reconcileSessions, m.reconcileBytes, m.lookups)
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("cairn_relay_stored_entries", "Live entries in the store.", func() float64 { return float64(stats().Entries) })
	gauge("cairn_relay_stored_bytes", "Envelope bytes of live entries.", func() float64 { return float64(stats().Bytes) })
	gauge("cairn_relay_mailboxes", "Mailboxes with any state.", func() float64 { return float64(stats().Mailboxes) })
	gauge("cairn_relay_tombstones", "Unexpired tombstones.", func() float64 { return float64(stats().Tombstones) })
	counter("cairn_relay_expired_total", "Entries deleted at their expiry.", func() float64 { return float64(stats().Expired) })
	counter("cairn_relay_evicted_total", "Entries evicted at the global storage cap.", func() float64 { return float64(stats().Evicted) })
	counter("cairn_relay_store_commits_total", "Group commits (fsyncs) of the store.", func() float64 { return float64(stats().Commits) })
	counter("cairn_relay_store_commit_ops_total", "Operations in the store's group commits.", func() float64 { return float64(stats().CommitOps) })
	counter("cairn_relay_corrupt_records_total", "Corrupt records met on reads.", func() float64 { return float64(stats().Corrupt) })
	gauge("cairn_relay_replay_cache_entries", "Live entries of the auth replay cache.", replay)
	gauge("cairn_relay_admission_peers", "Peers with admission state.", peers)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// reject counts a non-OK answer.
func (m *metrics) reject(proto string, s pb.Status) {
	m.rejects.WithLabelValues(proto, statusName(s)).Inc()
}

// statusName is the SPEC.md §11 name of a status ("RATE_LIMITED").
func statusName(s pb.Status) string {
	n := s.String()
	const prefix = "STATUS_"
	if len(n) > len(prefix) && n[:len(prefix)] == prefix {
		return n[len(prefix):]
	}
	return n
}

// statusOf is wire.StatusOf, the one mapping from errors to statuses.
func statusOf(err error) pb.Status { return wire.StatusOf(err) }
