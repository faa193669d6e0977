// Command manager runs the runnerpool-operator controllers.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
	// The manager image is built FROM scratch, without /usr/share/zoneinfo: schedule time zones
	// (spec.schedules[].timeZone) come from the database embedded here (about 450 KB).
	_ "time/tzdata"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/operator"
)

// version is set at build time (-ldflags "-X main.version=..."), by the
// Dockerfile and by hack/imagebuild.
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		o                 operator.Options
		namespaces        string
		allowedHosts      string
		webhookSecretFile string
		showVersion       bool
	)
	flag.BoolVar(&showVersion, "version", false, "Print the version and exit.")
	flag.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; 0 disables it.")
	flag.BoolVar(&o.MetricsSecure, "metrics-secure", true, "Serve metrics over HTTPS to callers the API server authenticates (TokenReview) and authorizes for GET /metrics (SubjectAccessReview); false serves plain HTTP to anyone.")
	flag.StringVar(&o.MetricsCertDir, "metrics-cert-dir", "", "Directory with tls.crt and tls.key for the secure metrics endpoint, reloaded when they change; empty or missing files: a self-signed certificate made at start.")
	flag.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.StringVar(&o.WebhookAddr, "webhook-bind-address", "0", "Address of the Bitbucket webhook receiver (path /webhooks/bitbucket), for example :8082; 0 disables it. It needs a secret, or --webhook-allow-unsigned.")
	flag.StringVar(&webhookSecretFile, "webhook-secret-file", "", "File holding the webhook secret; deliveries must then carry a valid X-Hub-Signature. Also read from $BITBUCKET_WEBHOOK_SECRET. A named file that is missing or empty stops the manager at start.")
	flag.BoolVar(&o.WebhookAllowUnsigned, "webhook-allow-unsigned", false, "Start the webhook receiver without a secret: anyone who reaches it can make pools poll (wakes never spend more than half of a credential's hourly request budget).")
	flag.BoolVar(&o.LeaderElect, "leader-elect", false, "Elect a leader, so that only one of several replicas acts at a time.")
	flag.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	flag.DurationVar(&o.LeaseDuration, "leader-election-lease-duration", 15*time.Second, "How long a leader holds the lease without renewing it.")
	flag.DurationVar(&o.RenewDeadline, "leader-election-renew-deadline", 10*time.Second, "How long the leader tries to renew before giving up.")
	flag.StringVar(&o.BudgetNamespace, "budget-namespace", "", "Namespace of the Leases that carry each Bitbucket credential's request count of the last hour over restarts (default: the leader election namespace).")
	flag.DurationVar(&o.BudgetSaveInterval, "budget-save-interval", 5*time.Second, "How often the leader saves the request counts that changed.")
	flag.StringVar(&namespaces, "namespaces", "", "Comma-separated namespaces to watch; empty watches all namespaces.")
	flag.StringVar(&o.APIURL, "bitbucket-api-url", bitbucket.DefaultBaseURL, "Bitbucket API base URL for pools that do not set spec.bitbucket.apiURL.")
	flag.StringVar(&o.TokenURL, "bitbucket-token-url", bitbucket.DefaultTokenURL, "OAuth token endpoint for pools that do not set spec.bitbucket.tokenURL.")
	flag.StringVar(&allowedHosts, "allowed-bitbucket-hosts", "", "Comma-separated hosts a RunnerPool's own spec.bitbucket.apiURL/tokenURL may name, besides those of --bitbucket-api-url and --bitbucket-token-url.")
	flag.IntVar(&o.RunnerConcurrency, "runner-concurrency", 8, "Runners reconciled in parallel.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if showVersion {
		fmt.Println(version)
		return nil
	}

	o.Logger = zap.New(zap.UseFlagOptions(&zapOpts))
	ctrl.SetLogger(o.Logger)
	for _, ns := range strings.Split(namespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			o.Namespaces = append(o.Namespaces, ns)
		}
	}
	for _, h := range strings.Split(allowedHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			o.AllowedHosts = append(o.AllowedHosts, h)
		}
	}
	secret := os.Getenv("BITBUCKET_WEBHOOK_SECRET")
	if webhookSecretFile != "" {
		b, err := os.ReadFile(webhookSecretFile)
		if err != nil {
			return fmt.Errorf("read --webhook-secret-file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
		if secret == "" {
			return fmt.Errorf("--webhook-secret-file %s is empty: put the webhook secret in it", webhookSecretFile)
		}
	}
	o.WebhookSecret = []byte(secret)

	mgr, err := operator.New(ctrl.GetConfigOrDie(), o)
	if err != nil {
		return err
	}
	o.Logger.Info("starting manager", "version", version, "namespaces", o.Namespaces, "bitbucketAPI", o.APIURL, "leaderElection", o.LeaderElect, "metricsSecure", o.MetricsSecure)
	return mgr.Start(ctrl.SetupSignalHandler())
}
