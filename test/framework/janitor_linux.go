package framework

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ownerFile, inside a work directory, names the process that owns it: its pid and
// its start time (pids are reused; the pair is not).
const ownerFile = "owner"

func writeOwner(workDir string) error {
	startTime, err := processStartTime(os.Getpid())
	if err != nil {
		return err
	}
	content := fmt.Sprintf("%d %s\n", os.Getpid(), startTime)
	if err := os.WriteFile(filepath.Join(workDir, ownerFile), []byte(content), 0o644); err != nil {
		return fmt.Errorf("write owner of %s: %w", workDir, err)
	}
	return nil
}

// reapAbandoned kills the programs of control planes whose owner died without
// calling Stop (a test binary killed by `go test -timeout`, say) and removes their
// work directories. etcd and kube-apiserver, started by envtest, have no
// parent-death signal, so without this they would run until the machine reboots.
// Every program's command line names a file in its work directory, which is how
// they are found.
func reapAbandoned() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), workDirPrefix+"*"))
	for _, dir := range dirs {
		if ownerAlive(dir) {
			continue
		}
		killProcessesUsing(dir)
		// A real node leaves more than processes: containers, mounts, cgroups, a bridge.
		_ = sweepRealNode(filepath.Join(dir, realNodeDir))
		_ = os.RemoveAll(dir)
	}
}

func ownerAlive(workDir string) bool {
	data, err := os.ReadFile(filepath.Join(workDir, ownerFile))
	if err != nil {
		// A directory that is being created has no owner file yet for a moment.
		info, statErr := os.Stat(workDir)
		return statErr == nil && time.Since(info.ModTime()) < time.Minute
	}
	fields := strings.Fields(string(data))
	if len(fields) != 2 {
		return false
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil {
		return false
	}
	startTime, err := processStartTime(pid)
	return err == nil && startTime == fields[1]
}

// killProcessesUsing sends SIGKILL to every process whose command line mentions a
// path inside dir.
func killProcessesUsing(dir string) {
	needle := []byte(filepath.Clean(dir) + string(filepath.Separator))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, needle) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// processStartTime is field 22 of /proc/<pid>/stat, in clock ticks since boot.
func processStartTime(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", fmt.Errorf("read start time of process %d: %w", pid, err)
	}
	// The command name (field 2) may contain spaces; it ends at the last ')'.
	rest := data[bytes.LastIndexByte(data, ')')+1:]
	fields := strings.Fields(string(rest))
	const startTimeAfterComm = 19 // field 22 counted from field 3
	if len(fields) <= startTimeAfterComm {
		return "", fmt.Errorf("parse /proc/%d/stat: too few fields", pid)
	}
	return fields[startTimeAfterComm], nil
}
