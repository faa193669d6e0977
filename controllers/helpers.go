package controllers

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

func poolScope(pool *v1alpha1.RunnerPool) bitbucket.Scope {
	return bitbucket.Scope{Workspace: string(pool.Spec.Bitbucket.Workspace), Repository: string(pool.Spec.Bitbucket.Repository)}
}

func scopeOf(runner *v1alpha1.Runner) bitbucket.Scope {
	return bitbucket.Scope{Workspace: string(runner.Spec.Workspace), Repository: string(runner.Spec.Repository)}
}

func labelStrings(labels []v1alpha1.RunnerLabel) []string {
	out := make([]string, len(labels))
	for i, l := range labels {
		out[i] = string(l)
	}
	return out
}

// sortedLabels is a label set in the one order Bitbucket's and ours are compared in.
func sortedLabels(labels []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(labels)))
}

// stepID identifies the step a runner runs, "" when idle.
func stepID(r bitbucket.Runner) string {
	if r.State.Step == nil {
		return ""
	}
	if r.State.Step.UUID != "" {
		return r.State.Step.UUID
	}
	return "unknown"
}

func setCondition(runner *v1alpha1.Runner, condType string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&runner.Status.Conditions, metav1.Condition{
		Type: condType, Status: status, Reason: reason, Message: message, ObservedGeneration: runner.Generation,
	})
}

func setPoolCondition(pool *v1alpha1.RunnerPool, condType string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&pool.Status.Conditions, metav1.Condition{
		Type: condType, Status: status, Reason: reason, Message: message, ObservedGeneration: pool.Generation,
	})
}

func equalStatus(a, b any) bool { return equality.Semantic.DeepEqual(a, b) }

func podReady(pod *corev1.Pod) bool {
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

// podEndReason names why a pod ended, from its containers' termination states.
func podEndReason(pod *corev1.Pod) string {
	for _, cs := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if t := cs.State.Terminated; t != nil && (t.ExitCode != 0 || t.Reason != "") {
			return fmt.Sprintf(": container %s %s, exit code %d", cs.Name, t.Reason, t.ExitCode)
		}
	}
	if pod.Status.Reason != "" {
		return ": " + pod.Status.Reason
	}
	return ""
}

// podWaitingMessage says what a pod that is not ready waits for, in words a user can act on.
func podWaitingMessage(pod *corev1.Pod) string {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return fmt.Sprintf("The runner pod cannot be scheduled: %s", c.Message)
		}
	}
	for _, cs := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
			return fmt.Sprintf("Container %s is waiting: %s %s", cs.Name, w.Reason, w.Message) + lastExit(cs)
		}
	}
	return fmt.Sprintf("The runner pod is %s", pod.Status.Phase)
}

// throttled turns "Bitbucket says wait" (rate limited, or the request budget spent) into a
// requeue after the wait instead of an error, so the work queue's backoff does not add to it
// and logs do not fill with errors for an expected condition.
func throttled(res ctrl.Result, err error) (ctrl.Result, error) {
	if err == nil || !(bitbucket.IsRateLimited(err) || bitbucket.IsBudgetExhausted(err)) {
		return res, err
	}
	wait, ok := bitbucket.RetryAfter(err)
	if !ok || wait <= 0 {
		wait = 30 * time.Second
	}
	return ctrl.Result{RequeueAfter: wait}, nil
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

// podFailing names why a pod cannot start, "" if it may still start.
func podFailing(pod *corev1.Pod) string {
	for _, cs := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil && failingReasons[w.Reason] {
			return fmt.Sprintf("container %s: %s", cs.Name, w.Reason) + lastExit(cs)
		}
	}
	return ""
}

func conditionReason(conds []metav1.Condition, condType string) string {
	if c := meta.FindStatusCondition(conds, condType); c != nil {
		return c.Reason
	}
	return ""
}
