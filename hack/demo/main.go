// Command demo is `make run`: a local control plane with kwok nodes, bbsim playing Bitbucket,
// the operator's manager binary, the sample RunnerPool, and a demo workload of pipeline steps.
// It shows the pool scale up and back down in a live table until Ctrl-C, then stops everything
// it started. Everything listens on 127.0.0.1.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

const (
	demoNamespace = "ci"
	demoPool      = "docker-builds"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	runDir := flag.String("run-dir", ".run", "directory for the kubeconfig and the logs")
	duration := flag.Duration("duration", 0, "stop after this long (0: run until Ctrl-C)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	root := harness.RepoRoot()
	logDir, _ := filepath.Abs(filepath.Join(*runDir, "logs"))
	if err := os.RemoveAll(logDir); err != nil {
		return err
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	quiet := logr.Discard()
	ctrllog.SetLogger(quiet)

	webhookPort, err := freePort()
	if err != nil {
		return err
	}
	webhookURL := fmt.Sprintf("http://127.0.0.1:%d/webhooks/bitbucket", webhookPort)

	say("starting a local control plane (kube-apiserver, etcd, scheduler, controller manager, kwok with 3 nodes)...")
	startCtx, cancelStart := context.WithTimeout(ctx, 3*time.Minute)
	sys, err := harness.Start(startCtx, harness.Options{
		NoManager: true,
		LogDir:    logDir,
		BBSim: bbsim.Options{
			Webhooks:     []bbsim.WebhookTarget{{URL: webhookURL}},
			ConnectDelay: time.Second,
			Logger:       quiet,
		},
	})
	cancelStart()
	if err != nil {
		return err
	}
	defer func() {
		say("stopping everything...")
		sys.Stop()
		say("stopped.")
	}()
	kubeconfig, _ := filepath.Abs(filepath.Join(*runDir, "kubeconfig"))
	if err := copyFile(sys.ControlPlane.KubeconfigPath, kubeconfig); err != nil {
		return err
	}
	say("bbsim (the Bitbucket simulator) listens on %s; workspace %s", sys.BBSimURL, bbsim.DefaultWorkspaceUUID)

	managerLog, err := os.Create(filepath.Join(logDir, "manager.log"))
	if err != nil {
		return err
	}
	defer managerLog.Close()
	metricsPort, err := freePort()
	if err != nil {
		return err
	}
	manager := exec.Command(filepath.Join(root, "bin", "manager"),
		"--kubeconfig", kubeconfig,
		"--bitbucket-api-url", sys.BBSimURL,
		"--bitbucket-token-url", sys.BBSimURL+"/site/oauth2/access_token",
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metricsPort),
		// Plain HTTP on loopback, so the metrics line below works with curl as it is.
		"--metrics-secure=false",
		"--health-probe-bind-address=127.0.0.1:0",
		fmt.Sprintf("--webhook-bind-address=127.0.0.1:%d", webhookPort),
		"--webhook-allow-unsigned", // loopback only
	)
	manager.Stdout, manager.Stderr = managerLog, managerLog
	manager.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := manager.Start(); err != nil {
		return fmt.Errorf("start manager (run make build first): %w", err)
	}
	defer func() {
		_ = manager.Process.Signal(syscall.SIGTERM)
		_ = manager.Wait()
	}()
	say("operator started (logs: %s, metrics: http://127.0.0.1:%d/metrics)", managerLog.Name(), metricsPort)

	if err := kubectl(ctx, root, kubeconfig, io.Discard, "create", "namespace", demoNamespace); err != nil {
		return err
	}
	if err := kubectl(ctx, root, kubeconfig, os.Stdout, "apply", "-n", demoNamespace, "-k", filepath.Join(root, "config", "samples")); err != nil {
		return err
	}
	say("")
	say("point kubectl at the local cluster with:  export KUBECONFIG=%s", kubeconfig)
	say("then try:  kubectl get rp,runners -n %s   and   kubectl describe rp %s -n %s", demoNamespace, demoPool, demoNamespace)
	say("")

	return liveView(ctx, sys)
}

// liveView prints the pool and the step queue every two seconds and plays the demo workload:
// a burst of steps once the pool is ready, a second smaller burst later, then quiet, so the
// pool scales up and back down.
func liveView(ctx context.Context, sys *harness.System) error {
	label := []string{"self.hosted", "linux", "docker"}
	type phase struct {
		after time.Duration
		count int
		dur   time.Duration
		what  string
	}
	plan := []phase{
		{0, 6, 40 * time.Second, "6 steps of 40s"},
		{70 * time.Second, 3, 30 * time.Second, "3 steps of 30s"},
	}
	var readyAt time.Time
	start := time.Now()
	fmt.Printf("%-8s %-6s %4s %4s %7s %5s %4s %4s %8s %8s | %6s %7s %4s %6s\n",
		"TIME", "", "MIN", "MAX", "DESIRED", "READY", "BUSY", "IDLE", "STARTING", "DRAINING", "QUEUED", "RUNNING", "DONE", "FAILED")
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		pool := &v1alpha1.RunnerPool{}
		err := sys.Client.Get(ctx, client.ObjectKey{Namespace: demoNamespace, Name: demoPool}, pool)
		if err == nil {
			if readyAt.IsZero() && pool.Status.Ready >= pool.Spec.MinRunners && pool.Status.Ready > 0 {
				readyAt = time.Now()
			}
			for len(plan) > 0 && !readyAt.IsZero() && time.Since(readyAt) >= plan[0].after {
				if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: plan[0].count, RunsOn: label, Duration: plan[0].dur}); err != nil {
					return err
				}
				fmt.Printf("%-8s >>> queued %s with runs-on %v\n", since(start), plan[0].what, label)
				plan = plan[1:]
			}
			queued, running, done, failed := steps(sys.BBSim.State())
			s := pool.Status
			fmt.Printf("%-8s %-6s %4d %4d %7d %5d %4d %4d %8d %8d | %6d %7d %4d %6d\n", since(start), "pool",
				pool.Spec.MinRunners, pool.Spec.MaxRunners, s.Desired, s.Ready, s.Busy, s.Idle, s.Starting, s.Draining,
				queued, running, done, failed)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func steps(st bbsim.Snapshot) (queued, running, done, failed int) {
	for _, s := range st.Steps {
		switch {
		case s.Status == "completed" && s.Result == "SUCCESSFUL":
			done++
		case s.Status == "completed":
			failed++
		case s.Status == "running":
			running++
		default:
			queued++
		}
	}
	return
}

func kubectl(ctx context.Context, root, kubeconfig string, out io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(root, "bin", "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o600)
}

func since(t time.Time) string { return time.Since(t).Round(time.Second).String() }

func say(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}
