package runnerpod

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Reasons of a Runner's PodReady condition.
const (
	ReasonPodRunning  = "PodRunning"
	ReasonPodNotReady = "PodNotReady"
	ReasonPodFailing  = "PodFailing"
)

// Ready reports a runner pod that runs with every container ready (docker-in-docker up).
func Ready(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ReadySince is when the pod last became ready, as its Ready condition says; zero when it is
// not ready.
func ReadySince(pod *corev1.Pod) time.Time {
	if !Ready(pod) {
		return time.Time{}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

// EndReason names why a pod ended, from its containers' termination states.
func EndReason(pod *corev1.Pod) string {
	for _, cs := range containerStatuses(pod) {
		if t := cs.State.Terminated; t != nil && (t.ExitCode != 0 || t.Reason != "") {
			return fmt.Sprintf(": container %s %s, exit code %d", cs.Name, t.Reason, t.ExitCode)
		}
	}
	if pod.Status.Reason != "" {
		return ": " + pod.Status.Reason
	}
	return ""
}

// WaitingMessage says what a pod that is not ready waits for, in words a user can act on.
func WaitingMessage(pod *corev1.Pod) string {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return fmt.Sprintf("The runner pod cannot be scheduled: %s", c.Message)
		}
	}
	for _, cs := range containerStatuses(pod) {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
			return fmt.Sprintf("Container %s is waiting: %s %s", cs.Name, w.Reason, w.Message) + lastExit(cs)
		}
	}
	return fmt.Sprintf("The runner pod is %s", pod.Status.Phase)
}

// failingReasons are container waiting reasons a pod does not recover from by itself.
var failingReasons = map[string]bool{
	"ImagePullBackOff": true, "InvalidImageName": true, "CrashLoopBackOff": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// Of a crashed container's termination message (the end of its log, as the runner pod's
// containers ask), the last lines say why it ended: a crash loop of docker-in-docker is
// otherwise "CrashLoopBackOff" and nothing more in the Runner's status.
const (
	lastExitLines    = 3
	lastExitLineSize = 200
)

// lastExit is ", last exit code N: <the end of its termination message>" for a container that
// ended before, "" otherwise.
func lastExit(cs corev1.ContainerStatus) string {
	last := cs.LastTerminationState.Terminated
	if last == nil {
		return ""
	}
	var lines []string
	for _, line := range strings.Split(last.Message, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			if len(line) > lastExitLineSize {
				line = "..." + line[len(line)-lastExitLineSize:]
			}
			lines = append(lines, line)
		}
	}
	if len(lines) > lastExitLines {
		lines = lines[len(lines)-lastExitLines:]
	}
	if len(lines) == 0 {
		return fmt.Sprintf(", last exit code %d", last.ExitCode)
	}
	return fmt.Sprintf(", last exit code %d: %s", last.ExitCode, strings.Join(lines, " | "))
}

// Failing names why a pod cannot start, "" if it may still start.
func Failing(pod *corev1.Pod) string {
	for _, cs := range containerStatuses(pod) {
		if w := cs.State.Waiting; w != nil && failingReasons[w.Reason] {
			return fmt.Sprintf("container %s: %s", cs.Name, w.Reason) + lastExit(cs)
		}
	}
	return ""
}

// containerStatuses are the statuses of the init containers (the docker sidecar among them),
// then of the containers.
func containerStatuses(pod *corev1.Pod) []corev1.ContainerStatus {
	return append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
}
