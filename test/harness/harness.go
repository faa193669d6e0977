// Package harness starts the whole local system the way a user runs it: a real control plane
// with kwok nodes, bbsim playing Bitbucket (and the runner agents), and the operator's
// controllers. End-to-end tests, the benchmark, the chaos run and the local demo share it.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/operator"
	"github.com/runnerpool/runnerpool-operator/test/framework"
)

// Options configure the system.
type Options struct {
	// Nodes is how many fake nodes of the framework's default size to create (the framework's
	// default number when zero, none when negative).
	Nodes int
	// NodeGroups, when set, are the fake nodes to create instead, sized for the workload.
	NodeGroups []NodeGroup
	// BBSim configures the simulator; its defaults give one workspace and one OAuth consumer.
	BBSim bbsim.Options
	// NoManager leaves the operator out, for tests that run it themselves.
	NoManager bool
	// WebhookSecret signs the webhooks bbsim sends to the operator when set.
	WebhookSecret string
	// NoWebhooks keeps bbsim from sending webhooks to the operator (polling only).
	NoWebhooks bool
	// Logger receives the operator's logs.
	Logger logr.Logger
	// LogDir keeps the control plane's logs.
	LogDir string
	// WrapBBSim, when set, wraps bbsim's HTTP handler, so a test can watch (or alter) what the
	// operator sends to Bitbucket and what it gets back.
	WrapBBSim func(http.Handler) http.Handler
	// BudgetNamespace, when set, is created and holds the operator's saved request budgets, as
	// the operator's own namespace does in a cluster.
	BudgetNamespace string
	// RealNode, when set, adds a real node to the control plane (framework.Options.RealNode);
	// bbsim then listens on the node's address, where the node's pods reach it.
	RealNode *framework.RealNodeOptions
}

// NodeGroup is a number of identical fake nodes.
type NodeGroup struct {
	Count       int
	CPU, Memory resource.Quantity
}

// System is a running local system.
type System struct {
	ControlPlane *framework.ControlPlane
	Client       client.Client
	Clientset    kubernetes.Interface
	Scheme       *k8sruntime.Scheme

	BBSim     *bbsim.Server
	BBSimURL  string
	bbsimHTTP *http.Server

	// Registry holds the Bitbucket client and webhook metrics of the running in-process
	// operator; each StartManager gets a fresh one.
	Registry *prometheus.Registry
	// Budgets is the request budget registry of the running in-process operator; each
	// StartManager gets a fresh one, as a new process would.
	Budgets *bitbucket.BudgetRegistry
	// BudgetNamespace is Options.BudgetNamespace.
	BudgetNamespace string

	// WebhookURL is where the in-process operator receives Bitbucket webhooks.
	WebhookURL    string
	webhookAddr   string
	webhookSecret []byte

	stopManager context.CancelFunc
	managerDone chan error
	cancel      context.CancelFunc
}

// Scheme returns a scheme with the built-in and the operator's types.
func Scheme() *k8sruntime.Scheme { return operator.Scheme() }

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Start brings the system up. Stop tears it down.
func Start(ctx context.Context, opts Options) (sys *System, err error) {
	fo := framework.Options{
		CRDDirectoryPaths: []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		Nodes:             opts.Nodes,
		LogDir:            opts.LogDir,
		RealNode:          opts.RealNode,
	}
	if len(opts.NodeGroups) > 0 {
		fo.Nodes = -1
	}
	cp, err := framework.Start(ctx, fo)
	if err != nil {
		return nil, err
	}
	sys = &System{ControlPlane: cp, Scheme: Scheme(), BudgetNamespace: opts.BudgetNamespace}
	defer func() {
		if err != nil {
			sys.Stop()
		}
	}()
	for _, g := range opts.NodeGroups {
		if _, err := cp.CreateNodes(ctx, g.Count, g.CPU, g.Memory); err != nil {
			return sys, fmt.Errorf("create nodes: %w", err)
		}
	}
	if sys.Client, err = client.New(cp.Config, client.Options{Scheme: sys.Scheme}); err != nil {
		return sys, fmt.Errorf("kubernetes client: %w", err)
	}
	if sys.Clientset, err = kubernetes.NewForConfig(cp.Config); err != nil {
		return sys, fmt.Errorf("kubernetes clientset: %w", err)
	}

	if opts.BudgetNamespace != "" {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: opts.BudgetNamespace}}
		if err := sys.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return sys, fmt.Errorf("create namespace %s: %w", opts.BudgetNamespace, err)
		}
	}

	runCtx, cancel := context.WithCancel(context.Background())
	sys.cancel = cancel
	sys.webhookSecret = []byte(opts.WebhookSecret)
	if !opts.NoManager {
		if err := sys.pickWebhookAddr(); err != nil {
			return sys, err
		}
		if !opts.NoWebhooks {
			opts.BBSim.Webhooks = append(opts.BBSim.Webhooks, bbsim.WebhookTarget{URL: sys.WebhookURL, Secret: opts.WebhookSecret})
		}
	}
	sys.BBSim = bbsim.New(opts.BBSim)
	bbsimHost := "127.0.0.1"
	if node := cp.RealNode(); node != nil {
		// The host end of the node's bridge: the operator reaches it from this process, the
		// runner pods from theirs.
		bbsimHost = node.IP().String()
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(bbsimHost, "0"))
	if err != nil {
		return sys, fmt.Errorf("listen for bbsim: %w", err)
	}
	sys.BBSimURL = "http://" + ln.Addr().String()
	var handler http.Handler = sys.BBSim
	if opts.WrapBBSim != nil {
		handler = opts.WrapBBSim(handler)
	}
	sys.bbsimHTTP = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = sys.bbsimHTTP.Serve(ln) }()
	go func() { _ = sys.BBSim.WatchPods(runCtx, sys.Clientset, "") }()

	if !opts.NoManager {
		if err := sys.StartManager(opts.Logger); err != nil {
			return sys, err
		}
	}
	return sys, nil
}

// StartManager runs the operator in this process, wired exactly as cmd/manager wires it, with
// its webhook receiver on WebhookURL.
func (s *System) StartManager(logger logr.Logger) error {
	if s.stopManager != nil {
		return errors.New("manager already running")
	}
	if err := s.pickWebhookAddr(); err != nil {
		return err
	}
	registry := prometheus.NewRegistry()
	budgets := bitbucket.NewBudgetRegistry()
	mgr, err := operator.New(s.ControlPlane.Config, operator.Options{
		BudgetNamespace:    s.BudgetNamespace,
		BudgetSaveInterval: time.Second,
		Budgets:            budgets,
		Logger:             logger,
		WebhookAddr:        s.webhookAddr,
		WebhookSecret:      s.webhookSecret,
		// On loopback, and the unsigned case is what most webhook tests play.
		WebhookAllowUnsigned: len(s.webhookSecret) == 0,
		APIURL:               s.BBSimURL,
		TokenURL:             s.BBSimURL + "/site/oauth2/access_token",
		Registry:             registry,
		Timings:              controllers.Timings{OrphanGrace: 3 * time.Second, OfflineGrace: 10 * time.Second},
		SkipNameValidation:   true,
	})
	if err != nil {
		return err
	}
	s.Registry, s.Budgets = registry, budgets
	ctx, cancel := context.WithCancel(context.Background())
	s.stopManager = cancel
	s.managerDone = make(chan error, 1)
	go func() { s.managerDone <- mgr.Start(ctx) }()
	return nil
}

// pickWebhookAddr chooses, once, a free loopback port for the operator's webhook receiver, so
// that bbsim can be told where to send webhooks before the operator starts.
func (s *System) pickWebhookAddr() error {
	if s.webhookAddr != "" {
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("pick a webhook port: %w", err)
	}
	s.webhookAddr = ln.Addr().String()
	s.WebhookURL = "http://" + s.webhookAddr + "/webhooks/bitbucket"
	return ln.Close()
}

// StopManager stops the in-process operator, as a crash would, without any cleanup.
func (s *System) StopManager() error {
	if s.stopManager == nil {
		return nil
	}
	s.stopManager()
	err := <-s.managerDone
	s.stopManager = nil
	return err
}

// Stop tears everything down.
func (s *System) Stop() {
	_ = s.StopManager()
	if s.cancel != nil {
		s.cancel()
	}
	if s.bbsimHTTP != nil {
		_ = s.bbsimHTTP.Close()
	}
	if s.BBSim != nil {
		s.BBSim.Close()
	}
	if s.ControlPlane != nil {
		_ = s.ControlPlane.Stop()
	}
}

// CreateNamespace creates a namespace with a credentials Secret for bbsim's default OAuth
// consumer, named "bitbucket".
func (s *System) CreateNamespace(ctx context.Context, name string) error {
	return s.CreateNamespaceFor(ctx, name, bbsim.DefaultClientID, bbsim.DefaultClientSecret)
}

// CreateNamespaceFor creates a namespace whose "bitbucket" Secret holds an OAuth consumer's
// credentials. Either may exist already.
func (s *System) CreateNamespaceFor(ctx context.Context, name, clientID, clientSecret string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := s.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bitbucket", Namespace: name},
		StringData: map[string]string{
			v1alpha1.SecretKeyClientID:     clientID,
			v1alpha1.SecretKeyClientSecret: clientSecret,
		},
	}
	if err := s.Client.Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create credentials secret in %s: %w", name, err)
	}
	return nil
}

// WaitWebhookReceiver waits until the in-process operator's webhook receiver accepts
// connections: the manager starts it once its caches are synced, so the controllers are about
// to run.
func (s *System) WaitWebhookReceiver(ctx context.Context) error {
	for {
		conn, err := net.DialTimeout("tcp", s.webhookAddr, time.Second)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never listened: %w", s.webhookAddr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// FileLogger writes log entries to w, one line each, stamped with the time.
func FileLogger(w io.Writer) logr.Logger {
	var mu sync.Mutex
	return funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(w, time.Now().UTC().Format(time.RFC3339Nano), prefix, args)
	}, funcr.Options{})
}

// Pool returns a small pool in the simulator's default workspace, polling fast.
func Pool(namespace, name string, minRunners, maxRunners int32) *v1alpha1.RunnerPool {
	return &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: v1alpha1.RunnerPoolSpec{
			Bitbucket: v1alpha1.BitbucketSpec{
				Workspace:            bbsim.DefaultWorkspaceUUID,
				CredentialsSecretRef: v1alpha1.SecretReference{Name: "bitbucket"},
			},
			Labels:     []v1alpha1.RunnerLabel{v1alpha1.RunnerLabel(name)},
			MinRunners: minRunners,
			MaxRunners: maxRunners,
			Scaling: v1alpha1.ScalingSpec{
				IdleRunners:    1,
				PollInterval:   metav1.Duration{Duration: 5 * time.Second},
				ScaleDownDelay: metav1.Duration{Duration: 5 * time.Second},
			},
		},
	}
}
