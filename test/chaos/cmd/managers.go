package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Leader election is short so that a killed leader is replaced within seconds, as the issue asks.
const (
	leaseDuration = 6 * time.Second
	renewDeadline = 4 * time.Second
)

// replica is one manager process, restarted whenever it ends (as a Deployment would).
type replica struct {
	id                                  string
	metricsAddr, probeAddr, webhookAddr string
	logPath                             string
	metricsPath                         string

	mu         sync.Mutex
	cmd        *exec.Cmd
	exited     chan struct{}
	exitErr    error
	killedByUs bool
	starts     int
}

func (rep *replica) alive() bool {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if rep.exited == nil {
		return false
	}
	select {
	case <-rep.exited:
		return false
	default:
		return true
	}
}

// managers supervises the replicas and kills the leader on demand.
type managers struct {
	r          *run
	bin        string
	secretFile string
	kubeconfig string
	apiURL     string
	replicas   []*replica

	stopping atomic.Bool
	wg       sync.WaitGroup
	http     *http.Client

	mu        sync.Mutex
	kills     map[string]int
	selfExits int
	failovers []time.Duration
}

func newManagers(r *run, secretFile string) (*managers, error) {
	m := &managers{
		r:          r,
		bin:        filepath.Join(r.root, "bin", "manager"),
		secretFile: secretFile,
		http:       &http.Client{Timeout: 2 * time.Second},
		kills:      map[string]int{},
	}
	if _, err := os.Stat(m.bin); err != nil {
		return nil, fmt.Errorf("find bin/manager (run make build): %w", err)
	}
	for _, id := range []string{"a", "b"} {
		rep := &replica{
			id:          id,
			logPath:     filepath.Join(r.tmp, "manager-"+id+".log"),
			metricsPath: filepath.Join(r.tmp, "metrics-"+id+".txt"),
		}
		var err error
		for _, addr := range []*string{&rep.metricsAddr, &rep.probeAddr, &rep.webhookAddr} {
			if *addr, err = freeAddr(); err != nil {
				return nil, err
			}
		}
		m.replicas = append(m.replicas, rep)
	}
	return m, nil
}

func (m *managers) startAll(kubeconfig, apiURL string) error {
	m.kubeconfig, m.apiURL = kubeconfig, apiURL
	for _, rep := range m.replicas {
		if err := m.start(rep); err != nil {
			return err
		}
		m.wg.Add(1)
		go m.supervise(rep)
	}
	m.wg.Add(1)
	go m.scrapeLoop()
	return nil
}

func (m *managers) start(rep *replica) error {
	logFile, err := os.OpenFile(rep.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open manager log: %w", err)
	}
	rep.mu.Lock()
	defer rep.mu.Unlock()
	rep.starts++
	fmt.Fprintf(logFile, "=== chaos: replica %s start #%d at %s\n", rep.id, rep.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(m.bin,
		"--kubeconfig", m.kubeconfig,
		"--bitbucket-api-url", m.apiURL,
		"--bitbucket-token-url", m.apiURL+"/site/oauth2/access_token",
		"--metrics-bind-address", rep.metricsAddr,
		// Plain HTTP on loopback: the run scrapes without a token.
		"--metrics-secure=false",
		"--health-probe-bind-address", rep.probeAddr,
		"--webhook-bind-address", rep.webhookAddr,
		"--webhook-secret-file", m.secretFile,
		"--leader-elect",
		"--leader-election-namespace", leaderNamespace,
		"--leader-election-lease-duration", leaseDuration.String(),
		"--leader-election-renew-deadline", renewDeadline.String(),
		// Debug logs give the secret scan more to look through.
		"--zap-log-level", "debug",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("start manager replica %s: %w", rep.id, err)
	}
	exited := make(chan struct{})
	rep.cmd, rep.exited, rep.exitErr, rep.killedByUs = cmd, exited, nil, false
	go func() {
		err := cmd.Wait()
		_ = logFile.Close()
		rep.mu.Lock()
		rep.exitErr = err
		rep.mu.Unlock()
		close(exited)
	}()
	return nil
}

// supervise restarts a replica whenever it ends: after our SIGKILL at once (after a short random
// pause), and after it ended on its own (it lost its lease, or the API server is down) with a
// growing delay, as the kubelet restarts a crashing container.
func (m *managers) supervise(rep *replica) {
	defer m.wg.Done()
	backoff := time.Second
	for {
		rep.mu.Lock()
		exited := rep.exited
		startedAt := time.Now()
		rep.mu.Unlock()
		<-exited
		if m.stopping.Load() {
			return
		}
		rep.mu.Lock()
		killed, exitErr := rep.killedByUs, rep.exitErr
		rep.mu.Unlock()
		var delay time.Duration
		if killed {
			delay = m.r.between(500*time.Millisecond, 2500*time.Millisecond)
		} else {
			if time.Since(startedAt) > 30*time.Second {
				backoff = time.Second
			}
			m.mu.Lock()
			m.selfExits++
			m.mu.Unlock()
			m.r.say("replica %s exited on its own (%v); restarting it in %s", rep.id, exitErr, backoff)
			delay = backoff
			backoff = min(2*backoff, 10*time.Second)
		}
		time.Sleep(delay)
		for !m.stopping.Load() {
			if err := m.start(rep); err != nil {
				m.r.say("restart replica %s: %v", rep.id, err)
				time.Sleep(time.Second)
				continue
			}
			break
		}
		if m.stopping.Load() {
			return
		}
	}
}

func (m *managers) stopAll() {
	if !m.stopping.CompareAndSwap(false, true) {
		return
	}
	for _, rep := range m.replicas {
		rep.mu.Lock()
		cmd, exited := rep.cmd, rep.exited
		rep.mu.Unlock()
		if cmd == nil {
			continue
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	m.wg.Wait()
}

// isLeader reads the replica's leader election gauge.
func (m *managers) isLeader(rep *replica) bool {
	body, err := m.scrape(rep)
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "leader_election_master_status{") && strings.HasSuffix(line, " 1") {
			return true
		}
	}
	return false
}

func (m *managers) scrape(rep *replica) (string, error) {
	if !rep.alive() {
		return "", errors.New("not running")
	}
	resp, err := m.http.Get("http://" + rep.metricsAddr + "/metrics")
	if err != nil {
		return "", fmt.Errorf("scrape replica %s: %w", rep.id, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read metrics of replica %s: %w", rep.id, err)
	}
	return string(body), nil
}

// saveScrape appends a scrape to the replica's metrics file, which the secret scan reads.
func (m *managers) saveScrape(rep *replica) {
	body, err := m.scrape(rep)
	if err != nil {
		return
	}
	f, err := os.OpenFile(rep.metricsPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "# chaos: scrape at %s\n%s", time.Now().Format(time.RFC3339Nano), body)
}

func (m *managers) scrapeLoop() {
	defer m.wg.Done()
	for !m.stopping.Load() {
		for _, rep := range m.replicas {
			m.saveScrape(rep)
		}
		for i := 0; i < 20 && !m.stopping.Load(); i++ {
			time.Sleep(500 * time.Millisecond)
		}
	}
}

func (m *managers) leader() *replica {
	for _, rep := range m.replicas {
		if m.isLeader(rep) {
			return rep
		}
	}
	return nil
}

func (m *managers) waitLeader(ctx context.Context, timeout time.Duration) (*replica, error) {
	deadline := time.Now().Add(timeout)
	for {
		if rep := m.leader(); rep != nil {
			return rep, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no replica became leader within %s", timeout)
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// killLeader sends SIGKILL to the leader and waits until a replica leads again. phase names
// what the pools were doing, for the report.
func (m *managers) killLeader(ctx context.Context, phase string) error {
	leader, err := m.waitLeader(ctx, 60*time.Second)
	if err != nil {
		return fmt.Errorf("kill during %s: %w", phase, err)
	}
	m.saveScrape(leader)
	leader.mu.Lock()
	cmd, exited := leader.cmd, leader.exited
	leader.killedByUs = true
	leader.mu.Unlock()
	killedAt := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill replica %s: %w", leader.id, err)
	}
	<-exited
	m.mu.Lock()
	m.kills[phase]++
	m.mu.Unlock()
	next, err := m.waitLeader(ctx, 90*time.Second)
	if err != nil {
		return fmt.Errorf("after killing replica %s during %s: %w", leader.id, phase, err)
	}
	failover := time.Since(killedAt)
	m.mu.Lock()
	m.failovers = append(m.failovers, failover)
	m.mu.Unlock()
	m.r.say("SIGKILL leader %s during %s; replica %s leads after %s", leader.id, phase, next.id, failover.Round(100*time.Millisecond))
	return nil
}

func (m *managers) stats() (kills map[string]int, total, selfExits int, failovers []time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	kills = map[string]int{}
	for k, v := range m.kills {
		kills[k] = v
		total += v
	}
	return kills, total, m.selfExits, append([]time.Duration(nil), m.failovers...)
}
