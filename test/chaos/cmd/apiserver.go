package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
)

// apiserverRestarter restarts kube-apiserver the way an upgrade or a crash-looping control plane
// node does: the process ends and a new one starts with the same flags, certificates and etcd.
// The framework starts it through envtest and offers no restart, so the running process is found
// by its command line (which names the control plane's work directory) and started again from
// it. The new process names the same directory, so the framework's teardown still reaps it.
type apiserverRestarter struct {
	workDir string
	logDir  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// findAPIServer returns the pid and argv of this control plane's kube-apiserver.
func (a *apiserverRestarter) findAPIServer() (int, []string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, fmt.Errorf("read /proc: %w", err)
	}
	needle := []byte(filepath.Clean(a.workDir) + string(filepath.Separator))
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, needle) {
			continue
		}
		argv := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
		if len(argv) == 0 || filepath.Base(string(argv[0])) != "kube-apiserver" {
			continue
		}
		args := make([]string, len(argv))
		for i, a := range argv {
			args[i] = string(a)
		}
		return pid, args, nil
	}
	return 0, nil, errors.New("kube-apiserver of this control plane not found")
}

// restart stops kube-apiserver (SIGTERM, SIGKILL after 10s: it stops serving at once but may
// linger on open watches), starts it again and waits until it
// is ready. It returns how long the API was unavailable.
func (a *apiserverRestarter) restart(ctx context.Context, cs kubernetes.Interface) (time.Duration, error) {
	pid, argv, err := a.findAPIServer()
	if err != nil {
		return 0, err
	}
	down := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("stop kube-apiserver: %w", err)
	}
	if !waitGone(pid, 10*time.Second) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if !waitGone(pid, 10*time.Second) {
			return 0, fmt.Errorf("kube-apiserver %d does not exit", pid)
		}
	}
	logFile, err := os.OpenFile(filepath.Join(a.logDir, "kube-apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("open kube-apiserver log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start kube-apiserver again: %w", err)
	}
	// Reaped at once when it ends, so that waitGone sees it go at the next restart.
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	a.mu.Lock()
	a.cmd, a.done = cmd, done
	a.mu.Unlock()

	deadline := time.Now().Add(2 * time.Minute)
	for {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return time.Since(down), nil
		}
		if time.Now().After(deadline) {
			return time.Since(down), fmt.Errorf("kube-apiserver not ready 2 minutes after its restart: %v", err)
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return time.Since(down), err
		}
	}
}

// stop ends the kube-apiserver this restarter started, before the framework stops etcd.
func (a *apiserverRestarter) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	a.cmd = nil
}

// waitGone waits until pid no longer exists (its parent reaped it).
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}
