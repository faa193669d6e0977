package runnerpod

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func waiting(name, reason, message string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}}
}

func terminated(name, reason string, exitCode int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: exitCode}}}
}

func crashed(name string, exitCode int32, message string) corev1.ContainerStatus {
	cs := waiting(name, "CrashLoopBackOff", "")
	cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: exitCode, Message: message}
	return cs
}

func running(name string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}

func TestFailing(t *testing.T) {
	tests := []struct {
		name string
		pod  corev1.PodStatus
		want string
	}{
		{"a pod whose image cannot be pulled is failing", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{running("docker"), waiting("runner", "ImagePullBackOff", "")}}, "container runner: ImagePullBackOff"},
		{"a crash-looping sidecar fails the pod", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{waiting("docker", "CrashLoopBackOff", "")}}, "container docker: CrashLoopBackOff"},
		{"a crash loop tells the end of the last exit's message", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{crashed("docker", 1, "+ exec rootlesskit\nfirst\n\nopen: Permission denied\n[rootlesskit:parent] error: failed to setup network\n")}},
			"container docker: CrashLoopBackOff, last exit code 1: first | open: Permission denied | [rootlesskit:parent] error: failed to setup network"},
		{"a long last line keeps its end", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{crashed("docker", 2, strings.Repeat("x", 300)+"exit status 1")}},
			"container docker: CrashLoopBackOff, last exit code 2: ..." + strings.Repeat("x", 187) + "exit status 1"},
		{"a crash without a message tells the exit code", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{crashed("docker", 137, "")}},
			"container docker: CrashLoopBackOff, last exit code 137"},
		{"a pod with an invalid image name is failing", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("runner", "InvalidImageName", "")}}, "container runner: InvalidImageName"},
		{"a pod whose container config is broken is failing", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("runner", "CreateContainerConfigError", "")}}, "container runner: CreateContainerConfigError"},
		{"a container being created may still start", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("runner", "ContainerCreating", "")}}, ""},
		{"a first failed pull may still be retried into a start", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("runner", "ErrImagePull", "")}}, ""},
		{"running containers are not failing", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{running("runner")}}, ""},
		{"a pod without container statuses may still start", corev1.PodStatus{Phase: corev1.PodPending}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Failing(&corev1.Pod{Status: tt.pod}); got != tt.want {
				t.Errorf("podFailing = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWaitingMessage(t *testing.T) {
	unschedulable := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Message: "0/3 nodes are available: 3 Insufficient memory."}
	tests := []struct {
		name string
		pod  corev1.PodStatus
		want string
	}{
		{
			name: "a pod no node can take says why",
			pod:  corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{unschedulable}},
			want: "The runner pod cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory.",
		},
		{
			name: "a container stuck waiting names itself and its reason",
			pod:  corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{waiting("runner", "ImagePullBackOff", "Back-off pulling image")}},
			want: "Container runner is waiting: ImagePullBackOff Back-off pulling image",
		},
		{
			name: "a waiting init container is named too",
			pod:  corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{waiting("docker", "CrashLoopBackOff", "back-off 10s")}},
			want: "Container docker is waiting: CrashLoopBackOff back-off 10s",
		},
		{
			name: "scheduling is what a pod waits for first",
			pod: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{unschedulable},
				ContainerStatuses: []corev1.ContainerStatus{waiting("runner", "ImagePullBackOff", "")}},
			want: "The runner pod cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory.",
		},
		{
			name: "containers being created are the normal course, so only the phase is told",
			pod: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{
				waiting("runner", "ContainerCreating", ""), waiting("docker", "PodInitializing", "")}},
			want: "The runner pod is Pending",
		},
		{
			name: "a scheduled pod tells its phase",
			pod:  corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}},
			want: "The runner pod is Running",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := WaitingMessage(&corev1.Pod{Status: tt.pod}); got != tt.want {
				t.Errorf("podWaitingMessage = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEndReason(t *testing.T) {
	tests := []struct {
		name string
		pod  corev1.PodStatus
		want string
	}{
		{"an OOM-killed container is named with its exit code", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{running("runner"), terminated("docker", "OOMKilled", 137)}}, ": container docker OOMKilled, exit code 137"},
		{"a failed init container is named", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{terminated("docker", "Error", 1)}}, ": container docker Error, exit code 1"},
		{"a container that completed is named too", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{terminated("runner", "Completed", 0)}}, ": container runner Completed, exit code 0"},
		{"an evicted pod says it was evicted", corev1.PodStatus{Reason: "Evicted"}, ": Evicted"},
		{"a container's end is told before the pod's reason", corev1.PodStatus{Reason: "Evicted", ContainerStatuses: []corev1.ContainerStatus{terminated("runner", "Error", 2)}}, ": container runner Error, exit code 2"},
		{"a pod that ended without a reason adds nothing", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{running("runner")}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EndReason(&corev1.Pod{Status: tt.pod}); got != tt.want {
				t.Errorf("podEndReason = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReadySince(t *testing.T) {
	at := metav1.NewTime(time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC))
	pod := func(phase corev1.PodPhase, ready corev1.ConditionStatus) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Phase: phase, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
			{Type: corev1.PodReady, Status: ready, LastTransitionTime: at},
		}}}
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		want time.Time
	}{
		{"a ready pod: when its Ready condition turned true", pod(corev1.PodRunning, corev1.ConditionTrue), at.Time},
		{"a running pod not ready yet", pod(corev1.PodRunning, corev1.ConditionFalse), time.Time{}},
		{"a pending pod", pod(corev1.PodPending, corev1.ConditionFalse), time.Time{}},
		{"a pod without conditions", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ReadySince(tt.pod); !got.Equal(tt.want) {
				t.Errorf("ReadySince = %s, want %s", got, tt.want)
			}
		})
	}
}
