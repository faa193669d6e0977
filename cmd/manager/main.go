// Command manager runs the runnerpool-operator controllers.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/observe"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		metricsAddr, probeAddr      string
		leaderElect                 bool
		leaderElectionNamespace     string
		namespaces                  string
		apiURL, tokenURL            string
		runnerConcurrency           int
		leaseDuration, renewDeadine time.Duration
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so that only one of several replicas acts at a time.")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	flag.StringVar(&namespaces, "namespaces", "", "Comma-separated namespaces to watch; empty watches all namespaces.")
	flag.StringVar(&apiURL, "bitbucket-api-url", bitbucket.DefaultBaseURL, "Bitbucket API base URL for pools that do not set spec.bitbucket.apiURL.")
	flag.StringVar(&tokenURL, "bitbucket-token-url", bitbucket.DefaultTokenURL, "OAuth token endpoint for pools that do not set spec.bitbucket.tokenURL.")
	flag.IntVar(&runnerConcurrency, "runner-concurrency", 8, "Runners reconciled in parallel.")
	flag.DurationVar(&leaseDuration, "leader-election-lease-duration", 15*time.Second, "How long a leader holds the lease without renewing it.")
	flag.DurationVar(&renewDeadine, "leader-election-renew-deadline", 10*time.Second, "How long the leader tries to renew before giving up.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	logger := zap.New(zap.UseFlagOptions(&opts))
	ctrl.SetLogger(logger)

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))

	cacheOpts := cache.Options{}
	if namespaces != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(namespaces, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				cacheOpts.DefaultNamespaces[ns] = cache.Config{}
			}
		}
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Cache:                   cacheOpts,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "runnerpool-operator.ci.runnerpool.dev",
		LeaderElectionNamespace: leaderElectionNamespace,
		LeaseDuration:           &leaseDuration,
		RenewDeadline:           &renewDeadine,
		// A replica that loses the lease stops at once, so two never act on one runner.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	bbMetrics, err := bitbucket.RegisterMetrics(crmetrics.Registry)
	if err != nil {
		return fmt.Errorf("register bitbucket metrics: %w", err)
	}
	clients := &controllers.Clients{
		Reader:          mgr.GetClient(),
		Metrics:         bbMetrics,
		Logger:          logger.WithName("bitbucket"),
		DefaultAPIURL:   apiURL,
		DefaultTokenURL: tokenURL,
	}
	if err := controllers.Setup(mgr, controllers.SetupOptions{Clients: clients, Store: observe.NewStore(nil), RunnerConcurrency: runnerConcurrency}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add readyz: %w", err)
	}
	logger.Info("starting manager", "namespaces", namespaces, "bitbucketAPI", apiURL, "leaderElection", leaderElect)
	return mgr.Start(ctrl.SetupSignalHandler())
}
