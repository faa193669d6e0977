// Command bbsim runs the Bitbucket Cloud simulator on a loopback address, for
// the local demo and for end-to-end tests. With --kubeconfig it also plays the
// runner agents of the runner pods it sees on that cluster's kwok nodes; agents
// that really run (the runner stand-in) connect through its agent API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bbsim:", err)
		os.Exit(1)
	}
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type config struct {
	listen     string
	kubeconfig string
	namespace  string
	verbosity  int
	opts       bbsim.Options
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bbsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg                                     config
		oauthClients, repositories, webhooks    listFlag
		accessTokens, readOnlyTokens, basicUser listFlag
		workspaceUUID, workspaceSlug, codes     string
		faults                                  bbsim.Faults
	)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:8089", "loopback address to listen on (port 0 picks a free port)")
	fs.Var(&oauthClients, "oauth-client", "OAuth consumer accepted by the token endpoint, ID:SECRET (repeatable; default "+bbsim.DefaultClientID+":"+bbsim.DefaultClientSecret+")")
	fs.StringVar(&workspaceUUID, "workspace", bbsim.DefaultWorkspaceUUID, "workspace UUID")
	fs.StringVar(&workspaceSlug, "workspace-slug", bbsim.DefaultWorkspaceSlug, "workspace slug")
	fs.Var(&repositories, "repository", "repository UUID, optionally UUID=slug (repeatable; default "+bbsim.DefaultRepositoryUUID+"="+bbsim.DefaultRepositorySlug+")")
	fs.Var(&accessTokens, "access-token", "Bearer token accepted as a workspace access token (repeatable)")
	fs.Var(&readOnlyTokens, "read-only-token", "Bearer token that may read but gets 403 on writes (repeatable)")
	fs.Var(&basicUser, "basic-user", "USER:PASSWORD accepted by HTTP Basic, like an app password (repeatable)")
	fs.StringVar(&cfg.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster whose runner pods on kwok nodes bbsim connects as agents (empty: connect runners through /_sim/ only)")
	fs.StringVar(&cfg.namespace, "namespace", "", "namespace to watch for runner pods (empty: all)")
	fs.IntVar(&cfg.opts.HourlyLimit, "hourly-limit", 1000, "API calls per credential per rolling hour; negative disables")
	fs.DurationVar(&cfg.opts.RetryAfter, "retry-after", 0, "when set, 429 answers carry this Retry-After")
	fs.DurationVar(&cfg.opts.TokenTTL, "token-ttl", 2*time.Hour, "OAuth access token lifetime")
	fs.IntVar(&cfg.opts.RunnerLimit, "runner-limit", 100, "runners per workspace and per repository")
	fs.StringVar(&cfg.opts.NoMatch, "no-match", "wait", "a step no ONLINE runner matches: wait or fail")
	fs.DurationVar(&cfg.opts.ConnectDelay, "connect-delay", time.Second, "time from a runner pod running to its runner being ONLINE")
	fs.Float64Var(&faults.ErrorRate, "error-rate", 0, "share of API requests answered with a 5xx")
	fs.StringVar(&codes, "error-codes", "500,502,503", "5xx statuses to pick from")
	fs.DurationVar(&faults.Latency, "latency", 0, "latency added to every API request")
	fs.Float64Var(&faults.DropRate, "drop-rate", 0, "share of API requests whose connection is dropped")
	fs.BoolVar(&faults.Force429, "force-429", false, "answer every API call with 429 and Retry-After")
	fs.Int64Var(&faults.Seed, "seed", 0, "seed for fault draws (0: random)")
	fs.Var(&webhooks, "webhook", "loopback URL[,SECRET] that receives commit-status events (repeatable)")
	fs.IntVar(&cfg.verbosity, "v", 0, "log verbosity")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := checkLoopback(cfg.listen); err != nil {
		return config{}, err
	}
	if cfg.opts.NoMatch != "wait" && cfg.opts.NoMatch != "fail" {
		return config{}, fmt.Errorf("--no-match must be wait or fail, got %q", cfg.opts.NoMatch)
	}
	if cfg.opts.ConnectDelay == 0 {
		cfg.opts.ConnectDelay = -1 // Options treats 0 as "default"; the flag's 0 means none
	}

	var err error
	if cfg.opts.OAuthConsumers, err = pairs(oauthClients, "--oauth-client"); err != nil {
		return config{}, err
	}
	if cfg.opts.BasicUsers, err = pairs(basicUser, "--basic-user"); err != nil {
		return config{}, err
	}
	cfg.opts.AccessTokens, cfg.opts.ReadOnlyTokens = accessTokens, readOnlyTokens

	ws := bbsim.Workspace{UUID: workspaceUUID, Slug: workspaceSlug}
	if len(repositories) == 0 {
		repositories = listFlag{bbsim.DefaultRepositoryUUID + "=" + bbsim.DefaultRepositorySlug}
	}
	for i, r := range repositories {
		id, slug, found := strings.Cut(r, "=")
		if !found {
			slug = bbsim.DefaultRepositorySlug
			if i > 0 {
				slug = fmt.Sprintf("%s-%d", bbsim.DefaultRepositorySlug, i+1)
			}
		}
		ws.Repositories = append(ws.Repositories, bbsim.Repository{UUID: id, Slug: slug})
	}
	cfg.opts.Workspaces = []bbsim.Workspace{ws}

	for _, c := range strings.Split(codes, ",") {
		code, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || code < 500 || code > 599 {
			return config{}, fmt.Errorf("--error-codes: %q is not a 5xx status", c)
		}
		faults.ErrorCodes = append(faults.ErrorCodes, code)
	}
	cfg.opts.Faults = faults

	for _, w := range webhooks {
		target := bbsim.WebhookTarget{URL: w}
		if u, secret, found := strings.Cut(w, ","); found {
			target = bbsim.WebhookTarget{URL: u, Secret: secret}
		}
		cfg.opts.Webhooks = append(cfg.opts.Webhooks, target)
	}
	return cfg, nil
}

// pairs parses KEY:VALUE flag values; none gives nil so Options applies its default.
func pairs(values []string, flagName string) (map[string]string, error) {
	if len(values) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, v := range values {
		key, value, found := strings.Cut(v, ":")
		if !found || key == "" || value == "" {
			return nil, fmt.Errorf("%s wants KEY:VALUE", flagName)
		}
		out[key] = value
	}
	return out, nil
}

// checkLoopback refuses any listen address that is reachable from elsewhere:
// the simulator hands out demo credentials to whoever asks.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--listen %q: only loopback addresses (127.0.0.1, ::1, localhost) are allowed", addr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := logr.FromSlogHandler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.Level(-cfg.verbosity)}))
	cfg.opts.Logger = log

	listener, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}
	sim := bbsim.New(cfg.opts)
	defer sim.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchErr := make(chan error, 1)
	if cfg.kubeconfig != "" {
		restConfig, err := clientcmd.BuildConfigFromFlags("", cfg.kubeconfig)
		if err != nil {
			_ = listener.Close()
			return fmt.Errorf("load kubeconfig %s: %w", cfg.kubeconfig, err)
		}
		cs, err := kubernetes.NewForConfig(restConfig)
		if err != nil {
			_ = listener.Close()
			return fmt.Errorf("build kubernetes client: %w", err)
		}
		go func() { watchErr <- sim.WatchPods(ctx, cs, cfg.namespace) }()
	}

	server := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- server.Serve(listener) }()
	printBanner(stdout, "http://"+listener.Addr().String(), sim.State(), cfg)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case err := <-watchErr:
		if err != nil {
			_ = server.Close()
			return err
		}
	}
	log.Info("shutting down")
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	if err := server.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

// printBanner tells a demo user where to point the operator. Printing the
// simulator's own demo credentials is deliberate: they protect nothing.
func printBanner(w io.Writer, url string, state bbsim.Snapshot, cfg config) {
	fmt.Fprintf(w, "bbsim listening on %s\n", url)
	for _, ws := range state.Workspaces {
		fmt.Fprintf(w, "  workspace   %s (%s)\n", ws.UUID, ws.Slug)
		for _, r := range ws.Repositories {
			fmt.Fprintf(w, "  repository  %s (%s/%s)\n", r.UUID, ws.Slug, r.Slug)
		}
	}
	consumers := cfg.opts.OAuthConsumers
	if consumers == nil {
		consumers = map[string]string{bbsim.DefaultClientID: bbsim.DefaultClientSecret}
	}
	for id, secret := range consumers {
		fmt.Fprintf(w, "  oauth       client id %s, secret %s (token URL %s/site/oauth2/access_token)\n", id, secret, url)
	}
	for _, t := range cfg.opts.AccessTokens {
		fmt.Fprintf(w, "  bearer      %s\n", t)
	}
	for _, t := range cfg.opts.ReadOnlyTokens {
		fmt.Fprintf(w, "  bearer      %s (read-only)\n", t)
	}
	for user, password := range cfg.opts.BasicUsers {
		fmt.Fprintf(w, "  basic       %s:%s\n", user, password)
	}
	if cfg.kubeconfig != "" {
		ns := cfg.namespace
		if ns == "" {
			ns = "all namespaces"
		}
		fmt.Fprintf(w, "  agents      runner pods in %s\n", ns)
	} else {
		fmt.Fprintf(w, "  agents      connect runners with POST %s/_sim/runners/{uuid}/connect\n", url)
	}
	fmt.Fprintf(w, "  admin       %s/_sim/state\n", url)
}
