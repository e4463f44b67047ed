package controllers

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentryv1 "github.com/agentry-dev/agentry/api/v1alpha1"
)

// EventReporter is the name agentry-manager's events are reported under.
const EventReporter = "agentry-manager"

// +kubebuilder:rbac:groups=agentry.dev,resources=agentpools;agents,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=agentry.dev,resources=agentpools/status;agents/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=agentry.dev,resources=agentpools/finalizers;agents/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create;update;patch;delete
// +kubebuilder:rbac:groups="";events.k8s.io,resources=events,verbs=create;patch

// NewScheme returns a scheme with the Kubernetes built-in types and agentry's.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := agentryv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// ManagerOptions returns the manager options the reconcilers rely on: the
// scheme, a pod cache that holds only agent pods, and no Secret cache at all
// (Secrets are read on demand, so the operator needs neither list nor watch
// on them). namespace, when not empty, limits the manager to one namespace.
func ManagerOptions(scheme *runtime.Scheme, namespace string) ctrl.Options {
	agentPods, err := labels.NewRequirement(agentryv1.AgentLabel, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant key; cannot fail
	}
	opts := ctrl.Options{
		Scheme: scheme,
		Cache: cache.Options{
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Pod{}: {Label: labels.NewSelector().Add(*agentPods)},
			},
		},
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
	}
	if namespace != "" {
		opts.Cache.DefaultNamespaces = map[string]cache.Config{namespace: {}}
	}
	return opts
}

// Options tune the reconcilers; the zero value is production's.
type Options struct {
	// Connect connects to servers; nil uses Connect.
	Connect Connector
	// OrphanCheckInterval is how often a pool looks for orphaned
	// registrations and vanished agents; 0 means every minute.
	OrphanCheckInterval time.Duration
	// DisableQueueWatch polls every server's job queue instead of watching
	// agentry-server's.
	DisableQueueWatch bool
	// KeyPoolSize is how many agent keys are made ahead of a burst; 0 means
	// DefaultKeyPoolSize, a negative value makes every key on demand.
	KeyPoolSize int
	// IdleProtection is how long an agent pod that runs without a job stays
	// protected from eviction; 0 means DefaultIdleProtection.
	IdleProtection time.Duration
}

// Setup registers the AgentPool and Agent reconcilers with mgr.
func Setup(mgr ctrl.Manager, opts Options) error {
	connect := opts.Connect
	if connect == nil {
		connect = Connect
	}
	jobs := newAgentJobs()
	born := newNewAgents()
	var watches *queueWatchers
	if !opts.DisableQueueWatch {
		watches = newQueueWatchers()
		watches.jobs = jobs
	}
	recorder := mgr.GetEventRecorder(EventReporter)
	creds := newCredentials(mgr.GetAPIReader(), credentialsTTL)
	if err := (&AgentPoolReconciler{
		Client:              mgr.GetClient(),
		APIReader:           mgr.GetAPIReader(),
		Credentials:         creds,
		Recorder:            recorder,
		Connect:             connect,
		Watches:             watches,
		Jobs:                jobs,
		NewAgents:           born,
		OrphanCheckInterval: opts.OrphanCheckInterval,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	var keys KeySource = freshKeys{}
	if opts.KeyPoolSize >= 0 {
		size := opts.KeyPoolSize
		if size == 0 {
			size = DefaultKeyPoolSize
		}
		pool := newKeyPool(size)
		if err := mgr.Add(pool); err != nil {
			return err
		}
		keys = pool
	}
	return (&AgentReconciler{
		Client:      mgr.GetClient(),
		APIReader:   mgr.GetAPIReader(),
		Credentials: creds,
		Recorder:    recorder,
		Connect:     connect,
		Keys:        keys,
		Jobs:        jobs,
		NewAgents:   born,

		IdleProtection: opts.IdleProtection,
	}).SetupWithManager(mgr)
}
