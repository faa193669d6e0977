package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// rssPerPool is Bitbucket's runner limit per workspace: the fleet takes one workspace per pool.
const rssPerPool = 100

// runRSS runs bin/manager as its own process, as it runs in a cluster, brings pools of 100
// runners up to 1000 Runner objects (their pods, Secrets and Bitbucket runners included), and
// reads the process's memory and CPU time from /proc.
func runRSS(ctx context.Context, cfg config, res *results) (safety, error) {
	runners, steadyFor := 1000, time.Minute
	if cfg.quick {
		runners, steadyFor = 300, 30*time.Second
	}
	pools := runners / rssPerPool
	const scenario = "rss"
	workspaces, consumers := teamWorkspaces(pools)
	sys, err := startSystem(ctx, cfg, systemOptions{
		scenario: scenario,
		nodes:    nodesFor(runners),
		bbsim:    bbsim.Options{Workspaces: workspaces, OAuthConsumers: consumers},
	})
	if err != nil {
		return safety{}, err
	}
	defer sys.stop()

	manager, err := startManagerProcess(ctx, sys)
	if err != nil {
		return safety{}, err
	}
	defer manager.stop()
	pid := manager.cmd.Process.Pid

	idle, _, err := processMemory(pid)
	if err != nil {
		return safety{}, err
	}
	res.set("rss_mib_idle", idle)
	cpuBefore, err := processCPU(pid)
	if err != nil {
		return safety{}, err
	}

	start := time.Now()
	for i := 1; i <= pools; i++ {
		if err := sys.CreateNamespaceFor(ctx, teamNamespace(i), teamClientID(i), teamClientSecret(i)); err != nil {
			return safety{}, err
		}
		if _, err := sys.createPool(ctx, poolSpec{
			namespace: teamNamespace(i), name: "fleet", workspace: workspaces[i-1].UUID,
			min: rssPerPool, max: rssPerPool, policy: v1alpha1.ScalingPolicyIdleBuffer, idleRunners: 1,
			pollInterval: pollIntervalSeconds * time.Second, scaleDownDelay: 5 * time.Minute,
		}); err != nil {
			return safety{}, err
		}
	}
	lastReport := time.Now()
	err = waitFor(ctx, 30*time.Minute, time.Second, fmt.Sprintf("%d runners ONLINE", runners), func() (bool, string, error) {
		if err := manager.alive(); err != nil {
			return false, "", err
		}
		bb := bitbucketRunners(sys.BBSim.State(), "rp-")
		on := countOnline(bb)
		why := fmt.Sprintf("%d Bitbucket runners, %d ONLINE", len(bb), on)
		if time.Since(lastReport) > 30*time.Second {
			rss, _, _ := processMemory(pid)
			progress("%s: %s; manager RSS %.0f MiB", scenario, why, rss)
			lastReport = time.Now()
		}
		return on >= runners, why, nil
	})
	if err != nil {
		return safety{}, err
	}
	onlineAfter := time.Since(start)
	cpuUp, err := processCPU(pid)
	if err != nil {
		return safety{}, err
	}
	res.set("rss_runners", float64(runners))
	res.set("rss_online_s", onlineAfter.Seconds())
	res.set("rss_cpu_s_create", cpuUp-cpuBefore)
	res.set("rss_cpu_ms_per_runner", (cpuUp-cpuBefore)*1000/float64(runners))

	// Let the last registrations and status writes settle, then measure the steady state: every
	// runner idle, every pool polling.
	if err := sleep(ctx, 2*pollIntervalSeconds*time.Second); err != nil {
		return safety{}, err
	}
	steadyStart, err := processCPU(pid)
	if err != nil {
		return safety{}, err
	}
	if err := sleep(ctx, steadyFor); err != nil {
		return safety{}, err
	}
	steadyEnd, err := processCPU(pid)
	if err != nil {
		return safety{}, err
	}
	rss, hwm, err := processMemory(pid)
	if err != nil {
		return safety{}, err
	}
	res.set("rss_mib_1000_runners", rss)
	res.set("rss_hwm_mib", hwm)
	res.set("rss_cpu_pct_steady", (steadyEnd-steadyStart)/steadyFor.Seconds()*100)
	progress("%s: %d runners ONLINE after %.1f s using %.1f CPU s; steady: RSS %.0f MiB (peak %.0f), CPU %.1f %%",
		scenario, runners, onlineAfter.Seconds(), cpuUp-cpuBefore, rss, hwm, (steadyEnd-steadyStart)/steadyFor.Seconds()*100)
	return finish(ctx, sys, scenario, 15*time.Minute, res)
}

// managerProcess is bin/manager running against the scenario's system.
type managerProcess struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan error
}

// startManagerProcess runs bin/manager (`make build` puts it there) the way hack/demo does and
// waits until its metrics endpoint answers.
func startManagerProcess(ctx context.Context, sys *system) (*managerProcess, error) {
	logFile, err := os.Create(filepath.Join(sys.logDir, "manager.log"))
	if err != nil {
		return nil, fmt.Errorf("create manager log: %w", err)
	}
	port, err := freePort()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(filepath.Join(harness.RepoRoot(), "bin", "manager"),
		"--kubeconfig", sys.ControlPlane.KubeconfigPath,
		"--bitbucket-api-url", sys.BBSimURL,
		"--bitbucket-token-url", sys.BBSimURL+"/site/oauth2/access_token",
		"--metrics-bind-address="+metricsAddr,
		// Plain HTTP on loopback: the scenario scrapes without a token.
		"--metrics-secure=false",
		"--health-probe-bind-address=127.0.0.1:0",
		"--webhook-bind-address=0",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start bin/manager (run make build first): %w", err)
	}
	m := &managerProcess{cmd: cmd, log: logFile, done: make(chan error, 1)}
	go func() { m.done <- cmd.Wait() }()
	err = waitFor(ctx, time.Minute, 200*time.Millisecond, "the manager's metrics endpoint", func() (bool, string, error) {
		if err := m.alive(); err != nil {
			return false, "", err
		}
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return false, err.Error(), nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status, nil
	})
	if err != nil {
		m.stop()
		return nil, err
	}
	return m, nil
}

var errManagerExited = errors.New("the manager exited")

// alive reports the manager's exit, with the log to read.
func (m *managerProcess) alive() error {
	select {
	case err := <-m.done:
		m.done <- err
		return fmt.Errorf("%w (%v); see %s", errManagerExited, err, m.log.Name())
	default:
		return nil
	}
}

// stop asks the manager to stop, and kills it if it does not within 10 s.
func (m *managerProcess) stop() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.log.Close()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
