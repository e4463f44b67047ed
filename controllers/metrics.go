package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics agentry-manager exports on controller-runtime's registry (served
// at the manager's metrics endpoint next to controller-runtime's own).
var (
	waitingJobsGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentry_pool_waiting_jobs",
		Help: "Job requests waiting for an agent whose demands the pool's agents meet.",
	}, []string{"namespace", "pool"})
	agentsGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentry_pool_agents",
		Help: "The pool's live agents by state: starting, idle or busy.",
	}, []string{"namespace", "pool", "state"})
	registrationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentry_agent_registrations_total",
		Help: "Agents registered with their server.",
	}, []string{"namespace", "pool"})
	deregistrationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentry_agent_deregistrations_total",
		Help: "Agent registrations removed from their server, by why: finished, scaledDown, orphan, deleted.",
	}, []string{"namespace", "pool", "reason"})
	failuresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentry_agent_failures_total",
		Help: "Agents that failed, by reason (ImagePullFailed, Unschedulable, StartupTimeout, PodFailed, PodDeleted, RegistrationFailed, ...).",
	}, []string{"namespace", "pool", "reason"})
	queuedToPodCreated = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agentry_job_queued_to_pod_created_seconds",
		Help:    "From a waiting job's queue time to the creation of the agent pod started for it.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
	}, []string{"namespace", "pool"})
	keyPoolReady = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "agentry_key_pool_ready_keys",
		Help: "RSA agent keys made ahead and ready for registrations (--key-pool-size caps it).",
	})
	keyPoolMisses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "agentry_key_pool_misses_total",
		Help: "Registrations that found the key pool empty and made their key on the spot; a burst that raises this wants a bigger --key-pool-size.",
	})
	queuedToJobStarted = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agentry_job_queued_to_started_seconds",
		Help:    "From a job's queue time to one of the pool's agents receiving it (assigned, when the server does not say), by the server's clock.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
	}, []string{"namespace", "pool"})
)

func init() {
	metrics.Registry.MustRegister(waitingJobsGauge, agentsGauge, registrationsTotal, deregistrationsTotal,
		failuresTotal, queuedToPodCreated, queuedToJobStarted, keyPoolReady, keyPoolMisses)
}

// forgetPoolMetrics drops a deleted pool's gauges.
func forgetPoolMetrics(namespace, pool string) {
	labels := prometheus.Labels{"namespace": namespace, "pool": pool}
	waitingJobsGauge.DeletePartialMatch(labels)
	agentsGauge.DeletePartialMatch(labels)
}
