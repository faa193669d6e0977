// Package operator wires the manager: controllers, the Bitbucket clients and their metrics, the
// webhook receiver, probes and leader election. The manager binary and the end-to-end tests
// both build it here, so the tests run exactly what ships.
package operator

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbwebhook"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/budgetstore"
	"github.com/runnerpool/runnerpool-operator/internal/credentials"
)

// Options configure the manager. Zero values are sensible for tests: no metrics or probe
// listeners, no webhook receiver, no leader election.
type Options struct {
	Logger logr.Logger
	// MetricsAddr, ProbeAddr and WebhookAddr are listen addresses; "" or "0" turns one off.
	MetricsAddr, ProbeAddr, WebhookAddr string
	// MetricsSecure serves metrics over HTTPS to authenticated and authorized callers only,
	// with the certificate in MetricsCertDir (self-signed when empty); see metrics.go.
	MetricsSecure  bool
	MetricsCertDir string
	// WebhookSecret, when set, is required as the HMAC signature of every webhook delivery.
	// Without it the receiver does not start unless WebhookAllowUnsigned is set: anyone who
	// can reach an unsigned receiver can make pools poll.
	WebhookSecret []byte
	// WebhookAllowUnsigned starts the receiver without a secret (a loopback demo, a network
	// nobody else reaches). Wakes still wait for the poll once half a budget is spent.
	WebhookAllowUnsigned bool
	// Namespaces to watch; empty watches all.
	Namespaces []string
	// LeaderElect makes replicas elect one leader, in LeaderElectionNamespace.
	LeaderElect             bool
	LeaderElectionNamespace string
	LeaseDuration           time.Duration
	RenewDeadline           time.Duration
	// APIURL and TokenURL are the Bitbucket endpoints of pools that do not set their own.
	APIURL, TokenURL string
	// AllowedHosts may appear in a pool's own apiURL and tokenURL, besides the hosts above.
	AllowedHosts      []string
	RunnerConcurrency int
	// Registry receives the Bitbucket client and webhook metrics; controller-runtime's when nil.
	Registry prometheus.Registerer
	// Timings shortens grace periods in tests; zero values are the defaults.
	Timings controllers.Timings
	// SkipNameValidation lets one process build the manager more than once (tests that
	// restart it, as a crash would).
	SkipNameValidation bool

	// BudgetNamespace holds one Lease per Bitbucket credential with the requests of the last
	// hour, so that a new leader resumes the budget (docs/adr/0009-request-budget-state.md).
	// Default: LeaderElectionNamespace, else the pod's own namespace when running in a
	// cluster; with neither, the budget lives in memory only.
	BudgetNamespace string
	// BudgetSaveInterval is how often the leader saves budgets that changed; default 5s.
	BudgetSaveInterval time.Duration
	// Budgets is the registry the Bitbucket clients draw from; default a new one, as a new
	// process has.
	Budgets *bitbucket.BudgetRegistry
}

// inClusterNamespaceFile is where Kubernetes mounts the pod's namespace.
const inClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// budgetNamespace picks where the budget Leases live: the namespace asked for, the leader
// election's, or the pod's own (the namespace leader election defaults to as well).
func budgetNamespace(o Options) string {
	if o.BudgetNamespace != "" {
		return o.BudgetNamespace
	}
	if o.LeaderElectionNamespace != "" {
		return o.LeaderElectionNamespace
	}
	if b, err := os.ReadFile(inClusterNamespaceFile); err == nil {
		return strings.TrimSpace(string(b))
	}
	return ""
}

// Scheme has the built-in types and the operator's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}

// New builds the manager; Start it to run.
func New(cfg *rest.Config, o Options) (manager.Manager, error) {
	if err := o.checkWebhook(); err != nil {
		return nil, err
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
	if o.Registry == nil {
		o.Registry = crmetrics.Registry
	}
	if o.MetricsAddr == "" {
		o.MetricsAddr = "0"
	}
	if o.ProbeAddr == "" {
		o.ProbeAddr = "0"
	}
	// The operator's pods, Secrets and claims carry the pool label; caching only those keeps memory
	// flat however many pods and Secrets the cluster has. Credentials Secrets are read directly.
	owned, err := labels.Parse(v1alpha1.LabelPool)
	if err != nil {
		return nil, fmt.Errorf("pool label selector: %w", err)
	}
	cacheOpts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:    {Label: owned},
		&corev1.Secret{}: {Label: owned},
		// Layer cache claims (spec.docker.layerCache).
		&corev1.PersistentVolumeClaim{}: {Label: owned},
		// The pools' PodDisruptionBudgets carry the pool label too.
		&policyv1.PodDisruptionBudget{}: {Label: owned},
	}}
	if len(o.Namespaces) > 0 {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range o.Namespaces {
			cacheOpts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	mopts := ctrl.Options{
		Scheme:                  Scheme(),
		Logger:                  o.Logger,
		Cache:                   cacheOpts,
		Metrics:                 metricsServerOptions(o),
		HealthProbeBindAddress:  o.ProbeAddr,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        "runnerpool-operator.ci.runnerpool.dev",
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// A replica that loses the lease stops at once, so two never act on one runner.
		LeaderElectionReleaseOnCancel: true,
	}
	if o.LeaseDuration > 0 {
		mopts.LeaseDuration = &o.LeaseDuration
	}
	if o.RenewDeadline > 0 {
		mopts.RenewDeadline = &o.RenewDeadline
	}
	if o.SkipNameValidation {
		mopts.Controller = config.Controller{SkipNameValidation: ptr.To(true)}
	}
	mgr, err := ctrl.NewManager(cfg, mopts)
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}

	bbMetrics, err := bitbucket.RegisterMetrics(o.Registry)
	if err != nil {
		return nil, fmt.Errorf("register bitbucket metrics: %w", err)
	}
	if o.Budgets == nil {
		o.Budgets = bitbucket.NewBudgetRegistry()
	}
	if ns := budgetNamespace(o); ns != "" {
		direct, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme()})
		if err != nil {
			return nil, fmt.Errorf("budget store client: %w", err)
		}
		identity, _ := os.Hostname()
		store := &budgetstore.Store{
			Client: direct, Namespace: ns, Registry: o.Budgets, Identity: identity,
			Interval: o.BudgetSaveInterval, Logger: o.Logger.WithName("budget"),
		}
		// Held until the store has loaded, which happens only on the leader, right when the
		// controllers start: their first Bitbucket call waits for the last leader's count.
		o.Budgets.Hold()
		if err := mgr.Add(store); err != nil {
			return nil, fmt.Errorf("add budget store: %w", err)
		}
	} else {
		o.Logger.Info("no namespace for the saved Bitbucket request budgets; a restart starts them empty")
	}
	clients := &credentials.Clients{
		Reader:          mgr.GetAPIReader(),
		Budgets:         o.Budgets,
		Metrics:         bbMetrics,
		Logger:          o.Logger.WithName("bitbucket"),
		DefaultAPIURL:   o.APIURL,
		DefaultTokenURL: o.TokenURL,
		AllowedHosts:    o.AllowedHosts,
	}
	if err := setupControllers(mgr, clients, o.RunnerConcurrency, o.Timings); err != nil {
		return nil, err
	}
	if o.webhookEnabled() {
		whMetrics := bbwebhook.NewMetrics()
		if err := whMetrics.Register(o.Registry); err != nil {
			return nil, fmt.Errorf("register webhook metrics: %w", err)
		}
		receiver := bbwebhook.NewReceiver(o.WebhookAddr, o.WebhookSecret, whMetrics, bbwebhook.NewPoolWaker(mgr.GetClient()), o.Logger.WithName("webhook"))
		if err := mgr.Add(receiver); err != nil {
			return nil, fmt.Errorf("add webhook receiver: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add healthz: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add readyz: %w", err)
	}
	return mgr, nil
}

func (o Options) webhookEnabled() bool { return o.WebhookAddr != "" && o.WebhookAddr != "0" }

// ErrUnsignedWebhook is returned by New when the webhook receiver would start without a secret.
var ErrUnsignedWebhook = errors.New("the webhook receiver has no secret: set one (--webhook-secret-file or $BITBUCKET_WEBHOOK_SECRET, the same secret as in Bitbucket's webhook), " +
	"or accept unsigned deliveries with --webhook-allow-unsigned, or turn the receiver off with --webhook-bind-address=0")

// checkWebhook refuses a receiver without a secret unless unsigned deliveries are allowed: a
// configuration error is reported once at start, not found out later by whoever floods it.
func (o Options) checkWebhook() error {
	if o.webhookEnabled() && len(bytes.TrimSpace(o.WebhookSecret)) == 0 && !o.WebhookAllowUnsigned {
		return ErrUnsignedWebhook
	}
	return nil
}
