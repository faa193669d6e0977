// Package metrics holds the operator's Prometheus collectors for pools and runners. They are
// registered with controller-runtime's registry, which the manager serves on its metrics
// endpoint. Labels are pool namespaces and names, states and reasons: never a credential.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

const namespace = "runnerpool"

var (
	// Runners counts a pool's runners by state (busy, idle, starting, draining, stuck).
	Runners = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "runners",
		Help: "Runners of a pool by state: busy, idle, starting, draining, stuck.",
	}, []string{"namespace", "pool", "state"})

	// DesiredRunners is what the scaling policy asked for.
	DesiredRunners = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "desired_runners",
		Help: "Runners the pool's scaling policy asks for, clamped to [minRunners, maxRunners].",
	}, []string{"namespace", "pool"})

	// MaxRunners is the pool's maxRunners, for alerts on pools at their ceiling.
	MaxRunners = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "max_runners",
		Help: "The pool's maxRunners.",
	}, []string{"namespace", "pool"})

	// QueuedSteps is the number of steps waiting for a runner of the pool, when known.
	QueuedSteps = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "queued_steps",
		Help: "Steps waiting for a runner of the pool (Queue policy, or steps seen waiting).",
	}, []string{"namespace", "pool"})

	// PendingTooLong counts runners whose pods waited for a node past the pending timeout.
	PendingTooLong = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "runners_pending_too_long",
		Help: "Starting runners whose pods have waited for a node longer than the pool's pendingTimeout.",
	}, []string{"namespace", "pool"})

	// PollIntervalSeconds is the pool's effective poll interval, stretched when the request
	// budget runs low.
	PollIntervalSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "poll_interval_seconds",
		Help: "The pool's effective poll interval; above spec.scaling.pollInterval when the Bitbucket request budget runs low.",
	}, []string{"namespace", "pool"})

	// ScaleEvents counts decisions carried out, by action and reason.
	ScaleEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "scale_events_total",
		Help: "Runners created, drained, re-enabled, replaced or removed, by reason.",
	}, []string{"namespace", "pool", "action", "reason"})

	// Cleanups counts leftovers removed: ended pods, orphaned Bitbucket runners, Secrets.
	Cleanups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "cleanups_total",
		Help: "Leftovers removed by the operator, by kind (pod, bitbucket_runner) and reason. Secrets of gone runners are removed by garbage collection.",
	}, []string{"namespace", "pool", "kind", "reason"})

	// UndecodableObjects is 1 for each RunnerPool or Runner the operator cannot read (its spec
	// or status does not decode into the API types), which it reports and otherwise leaves
	// alone (docs/adr/0012-undecodable-objects.md).
	UndecodableObjects = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "undecodable_objects",
		Help: "1 for each RunnerPool or Runner whose spec or status the operator cannot decode; such an object is reported and left as it is.",
	}, []string{"namespace", "kind", "name"})

	// StepWaitSeconds is how long steps waited for a runner, as seen by the operator: from
	// when a step was first seen waiting to when a runner of the pool picked it.
	StepWaitSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "step_wait_seconds",
		Help:    "Seconds a step waited for a runner of the pool (first seen waiting to started).",
		Buckets: []float64{1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600},
	}, []string{"namespace", "pool"})
)

func init() {
	crmetrics.Registry.MustRegister(Runners, DesiredRunners, MaxRunners, QueuedSteps, PendingTooLong,
		PollIntervalSeconds, ScaleEvents, Cleanups, StepWaitSeconds, UndecodableObjects)
}

// ForgetPool drops a deleted pool's series.
func ForgetPool(ns, pool string) {
	labels := prometheus.Labels{"namespace": ns, "pool": pool}
	for _, v := range []*prometheus.GaugeVec{Runners, DesiredRunners, MaxRunners, QueuedSteps, PendingTooLong, PollIntervalSeconds} {
		v.DeletePartialMatch(labels)
	}
	ScaleEvents.DeletePartialMatch(labels)
	Cleanups.DeletePartialMatch(labels)
	StepWaitSeconds.DeletePartialMatch(labels)
}
