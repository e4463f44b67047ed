// Command agentry-manager is agentry's operator: it runs the AgentPool and
// Agent reconcilers.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/agentry-dev/agentry/controllers"
)

type config struct {
	metricsAddr string
	pprofAddr   string
	probeAddr   string
	leaderElect bool
	namespace   string
	keyPoolSize int
	kubeQPS     float64
	kubeBurst   int
	// idleProtection: see controllers.Options.IdleProtection.
	idleProtection time.Duration
}

func main() {
	var cfg config
	flag.StringVar(&cfg.metricsAddr, "metrics-bind-address", ":8080", `Address the metrics endpoint binds to; "0" disables it.`)
	flag.StringVar(&cfg.pprofAddr, "pprof-bind-address", "0", `Address Go's pprof endpoints (/debug/pprof/) bind to, for profiling; "0" disables them.`)
	flag.StringVar(&cfg.probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	flag.BoolVar(&cfg.leaderElect, "leader-elect", false, "Elect a leader, so only one of several replicas reconciles.")
	flag.StringVar(&cfg.namespace, "namespace", "", "Watch only this namespace (default: all namespaces).")
	// client-go's defaults (20/30) let a burst of 100 agents, each a handful
	// of API calls, queue behind the client's own rate limiter for seconds.
	flag.Float64Var(&cfg.kubeQPS, "kube-api-qps", 100, "Queries per second the manager may send to the Kubernetes API server.")
	flag.IntVar(&cfg.kubeBurst, "kube-api-burst", 200, "Burst of queries the manager may send to the Kubernetes API server above --kube-api-qps.")
	flag.IntVar(&cfg.keyPoolSize, "key-pool-size", controllers.DefaultKeyPoolSize, "RSA agent keys made ahead of a burst of registrations; 0 or less makes each key on demand.")
	flag.DurationVar(&cfg.idleProtection, "idle-eviction-protection", controllers.DefaultIdleProtection,
		"How long an agent pod that runs without a job stays protected from eviction (by the pool's PodDisruptionBudget) before a node drain may take it; at least twice the pool's pollInterval.")
	// Log times to the nanosecond (controller-runtime's default is whole
	// seconds): a burst's events are milliseconds apart.
	zapOpts := zap.Options{TimeEncoder: zapcore.RFC3339NanoTimeEncoder}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if cfg.kubeQPS <= 0 || cfg.kubeBurst <= 0 {
		fmt.Fprintf(os.Stderr, "agentry-manager: --kube-api-qps (%g) and --kube-api-burst (%d) must be positive\n", cfg.kubeQPS, cfg.kubeBurst)
		os.Exit(2)
	}
	if cfg.idleProtection <= 0 {
		fmt.Fprintf(os.Stderr, "agentry-manager: --idle-eviction-protection (%s) must be positive\n", cfg.idleProtection)
		os.Exit(2)
	}

	if err := run(ctrl.SetupSignalHandler(), ctrl.GetConfigOrDie(), cfg); err != nil {
		ctrl.Log.Error(err, "Manager stopped")
		os.Exit(1)
	}
}

func run(ctx context.Context, restConfig *rest.Config, cfg config) error {
	scheme, err := controllers.NewScheme()
	if err != nil {
		return err
	}
	opts := controllers.ManagerOptions(scheme, cfg.namespace)
	opts.Metrics = metricsserver.Options{BindAddress: cfg.metricsAddr}
	opts.HealthProbeBindAddress = cfg.probeAddr
	if cfg.pprofAddr != "0" {
		opts.PprofBindAddress = cfg.pprofAddr
	}
	opts.LeaderElection = cfg.leaderElect
	opts.LeaderElectionID = "agentry-manager.agentry.dev"
	// In a cluster the lease lives in the manager's own namespace; outside
	// one, in the watched namespace if there is one.
	opts.LeaderElectionNamespace = cfg.namespace
	// Leaving at once on shutdown lets a new leader take over without
	// waiting out the lease.
	opts.LeaderElectionReleaseOnCancel = true
	// On SIGTERM, reconciles in flight (a registration, a deregistration)
	// get this long to finish; the queue watches stop at once.
	opts.GracefulShutdownTimeout = ptr.To(30 * time.Second)

	restConfig.QPS, restConfig.Burst = float32(cfg.kubeQPS), cfg.kubeBurst
	mgr, err := ctrl.NewManager(restConfig, opts)
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	if err := controllers.Setup(mgr, controllers.Options{KeyPoolSize: keyPoolOption(cfg.keyPoolSize), IdleProtection: cfg.idleProtection}); err != nil {
		return fmt.Errorf("setting up reconcilers: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.Info("Starting manager", "namespace", cfg.namespace, "leaderElect", cfg.leaderElect)
	return mgr.Start(ctx)
}

// keyPoolOption maps the flag (0 or less disables the pool) to
// controllers.Options.KeyPoolSize (negative disables it).
func keyPoolOption(flagValue int) int {
	if flagValue <= 0 {
		return -1
	}
	return flagValue
}
