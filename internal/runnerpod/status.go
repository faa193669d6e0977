package runnerpod

import (
	"fmt"

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
			return fmt.Sprintf("Container %s is waiting: %s %s", cs.Name, w.Reason, w.Message)
		}
	}
	return fmt.Sprintf("The runner pod is %s", pod.Status.Phase)
}

// failingReasons are container waiting reasons a pod does not recover from by itself.
var failingReasons = map[string]bool{
	"ImagePullBackOff": true, "InvalidImageName": true, "CrashLoopBackOff": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// Failing names why a pod cannot start, "" if it may still start.
func Failing(pod *corev1.Pod) string {
	for _, cs := range containerStatuses(pod) {
		if w := cs.State.Waiting; w != nil && failingReasons[w.Reason] {
			return fmt.Sprintf("container %s: %s", cs.Name, w.Reason)
		}
	}
	return ""
}

// containerStatuses are the statuses of the init containers (the docker sidecar among them),
// then of the containers.
func containerStatuses(pod *corev1.Pod) []corev1.ContainerStatus {
	return append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
}
