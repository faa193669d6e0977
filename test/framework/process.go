package framework

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// component is one control plane program started by this package (envtest starts
// etcd and kube-apiserver itself).
type component struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error // set before exited is closed
}

func startComponent(name, binary string, args, extraEnv []string, logDir string) (*component, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.SysProcAttr = childProcAttr()
	if err := startCommand(cmd); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &component{name: name, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		c.exitErr = cmd.Wait()
		_ = logFile.Close()
		close(c.exited)
	}()
	return c, nil
}

// hasExited reports whether the program stopped on its own, with its exit status.
func (c *component) hasExited() (bool, error) {
	select {
	case <-c.exited:
		return true, c.exitErr
	default:
		return false, nil
	}
}

// stop asks the program to exit, kills it after grace, and then kills whatever
// is left in its process group, so helpers it started do not outlive it.
func (c *component) stop(grace time.Duration) {
	pid := c.cmd.Process.Pid
	if exited, _ := c.hasExited(); !exited {
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(grace):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-c.exited
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// diagnose describes a program that died, with the end of its log.
func (c *component) diagnose() error {
	exited, exitErr := c.hasExited()
	if !exited {
		return nil
	}
	return fmt.Errorf("%s exited (%v); last log lines:\n%s", c.name, exitErr, tailFile(c.logPath, 20))
}

// tailFile returns the last lines of a log, for error messages.
func tailFile(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	data = bytes.TrimRight(data, "\n")
	for i := len(data) - 1; i >= 0; i-- {
		if data[i] == '\n' {
			lines--
			if lines == 0 {
				return string(data[i+1:])
			}
		}
	}
	return string(data)
}

// diagnoseAll joins the failures of every component that died.
func diagnoseAll(components []*component) error {
	var errs []error
	for _, c := range components {
		if err := c.diagnose(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
