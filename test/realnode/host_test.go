package realnode

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// What the node's host shows of a pod: its containers' cgroups (v1, cgroupfs driver: the
// kubelet's <cgroupRoot>/kubepods/<qos>/pod<uid>/<container id>), their processes and their
// mounts. The tests run as root in the host's namespaces, so /proc and /sys/fs/cgroup are the
// node's own.

const memoryHierarchy = "/sys/fs/cgroup/memory"

// containerID is the runtime's id of a container from its status.
func containerID(status corev1.ContainerStatus) string {
	_, id, _ := strings.Cut(status.ContainerID, "://")
	return id
}

// containerCgroup is the directory, in the memory hierarchy, of a container of pod; empty when
// the kubelet has not made it (or removed it).
func containerCgroup(pod types.UID, id string) string {
	for _, pattern := range []string{
		filepath.Join(memoryHierarchy, "*", "kubepods", "*", "pod"+string(pod), id), // Burstable, BestEffort
		filepath.Join(memoryHierarchy, "*", "kubepods", "pod"+string(pod), id),      // Guaranteed
	} {
		if matches, _ := filepath.Glob(pattern); len(matches) == 1 {
			return matches[0]
		}
	}
	return ""
}

// cgroupProcs lists the processes of one cgroup (not of its children).
func cgroupProcs(dir string) []int {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, field := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(field); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cgroupTreeProcs lists the processes of a cgroup and of every cgroup under it.
func cgroupTreeProcs(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			pids = append(pids, cgroupProcs(path)...)
		}
		return nil
	})
	return pids
}

// readInt reads a cgroup file holding one number.
func readInt(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// memoryCgroupOf is the memory cgroup of a process as /proc/<pid>/cgroup names it: a path
// from the root of the hierarchy.
func memoryCgroupOf(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && strings.Contains(","+parts[1]+",", ",memory,") {
			return parts[2], nil
		}
	}
	return "", fmt.Errorf("process %d has no memory cgroup", pid)
}

// command is a process's command line, arguments joined by spaces.
func command(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(data), "\x00", " "))
}

// mountAt returns the root (the source directory within its filesystem) and the filesystem
// type of the mount at point in the mount namespace of pid.
func mountAt(pid int, point string) (root, fsType string, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		// id parent major:minor root mount-point options... - fstype source super-options
		fields := strings.Fields(scanner.Text())
		if len(fields) < 5 || fields[4] != point {
			continue
		}
		root = fields[3]
		for i, field := range fields {
			if field == "-" && i+1 < len(fields) {
				fsType = fields[i+1]
			}
		}
	}
	if root == "" {
		return "", "", fmt.Errorf("process %d has no mount at %s", pid, point)
	}
	return root, fsType, scanner.Err()
}

// dirSize is the size of the regular files under dir.
func dirSize(dir string) int64 {
	var size int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				size += info.Size()
			}
		}
		return nil
	})
	return size
}
