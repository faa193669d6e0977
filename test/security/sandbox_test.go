package security_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// podSecurityEnforce is the namespace label that makes the API server enforce a Pod Security
// Standard.
const podSecurityEnforce = "pod-security.kubernetes.io/enforce"

// A rootless pool and an unprivileged pool under a sandboxed RuntimeClass come up: the API
// server admits their pods, the nodes run them and the runners go ONLINE. The unprivileged one
// does so in a namespace that enforces the baseline Pod Security Standard, where the
// privileged modes are refused. kwok plays the nodes, so this checks the pod spec and its
// admission, not a real daemon starting (docs/security.md says what each mode needs).
func TestRootlessAndSandboxedPoolsComeUp(t *testing.T) {
	sys := sharedSystem(t)
	ctx := t.Context()
	var logs logBuffer
	if err := sys.StartManager(logs.logger()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.StopManager() })

	sandboxed := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "sandboxed"}, Handler: "kata"}
	if err := sys.Client.Create(ctx, sandboxed); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	tests := []struct {
		name, namespace string
		podSecurity     string // enforced Pod Security Standard, "" for none
		mode            v1alpha1.DockerMode
		runtimeClass    string
		wantImage       string
		wantPrivileged  bool
		wantUser        int64 // 0: the image's user
		wantInit        int
	}{
		{
			name: "rootless", namespace: "sandbox-rootless", mode: v1alpha1.DockerModeRootless,
			wantImage: "docker:dind-rootless", wantPrivileged: true, wantUser: 1000, wantInit: 2,
		},
		{
			name: "unprivileged in a sandbox", namespace: "sandbox-baseline", podSecurity: "baseline",
			mode: v1alpha1.DockerModeUnprivileged, runtimeClass: sandboxed.Name,
			wantImage: "docker:dind", wantPrivileged: false, wantInit: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tt.namespace}}
			if tt.podSecurity != "" {
				ns.Labels = map[string]string{podSecurityEnforce: tt.podSecurity}
			}
			if err := sys.Client.Create(ctx, ns); err != nil {
				t.Fatal(err)
			}
			if err := sys.CreateNamespace(ctx, tt.namespace); err != nil {
				t.Fatal(err)
			}
			pool := harness.Pool(tt.namespace, "sandbox", 1, 1)
			pool.Spec.Scaling.IdleRunners = 0
			pool.Spec.Docker.Mode = tt.mode
			if tt.runtimeClass != "" {
				pool.Spec.Template.RuntimeClassName = &tt.runtimeClass
			}
			if err := sys.Client.Create(ctx, pool); err != nil {
				t.Fatal(err)
			}
			prefix := controllers.BitbucketNamePrefix(getPool(t, sys, tt.namespace, pool.Name))

			var pod corev1.Pod
			eventually(t, 45*time.Second, "the runner ONLINE and its pod Running", func() (bool, string) {
				total, online := onlineRunners(sys, prefix)
				var pods corev1.PodList
				if err := sys.Client.List(ctx, &pods, client.InNamespace(tt.namespace), client.MatchingLabels{v1alpha1.LabelPool: pool.Name}); err != nil {
					return false, err.Error()
				}
				if len(pods.Items) != 1 {
					return false, fmt.Sprintf("%d pods; %d runners, %d ONLINE", len(pods.Items), total, online)
				}
				pod = pods.Items[0]
				return online == 1 && pod.Status.Phase == corev1.PodRunning,
					fmt.Sprintf("pod %s, %d runners, %d ONLINE", pod.Status.Phase, total, online)
			})

			// What the API server stored, which is what a kubelet would run.
			if len(pod.Spec.InitContainers) != tt.wantInit {
				t.Errorf("%d init containers, want %d", len(pod.Spec.InitContainers), tt.wantInit)
			}
			for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
				privileged := c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
				switch c.Name {
				case runnerpod.RunnerContainerName:
					if privileged || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
						t.Errorf("runner container may be or become privileged: %+v", c.SecurityContext)
					}
				case runnerpod.DockerContainerName:
					if c.Image != tt.wantImage || privileged != tt.wantPrivileged {
						t.Errorf("docker runs %s privileged=%v, want %s privileged=%v", c.Image, privileged, tt.wantImage, tt.wantPrivileged)
					}
					user := int64(0)
					if c.SecurityContext.RunAsUser != nil {
						user = *c.SecurityContext.RunAsUser
					}
					if user != tt.wantUser {
						t.Errorf("docker runs as user %d, want %d", user, tt.wantUser)
					}
				default:
					if privileged {
						t.Errorf("init container %s is privileged", c.Name)
					}
				}
			}
			if got := pod.Spec.RuntimeClassName; (got == nil) != (tt.runtimeClass == "") || (got != nil && *got != tt.runtimeClass) {
				t.Errorf("pod runtimeClassName %v, want %q", got, tt.runtimeClass)
			}

			if tt.podSecurity != "" {
				checkPrivilegedModesRefused(t, sys, pool)
			}

			if err := sys.Client.Delete(ctx, pool); err != nil {
				t.Fatal(err)
			}
			eventually(t, 45*time.Second, "the pool to be gone", func() (bool, string) {
				err := sys.Client.Get(ctx, client.ObjectKeyFromObject(pool), &v1alpha1.RunnerPool{})
				return apierrors.IsNotFound(err), fmt.Sprint(err)
			})
		})
	}

	t.Run("unprivileged without a runtime class is refused", func(t *testing.T) {
		pool := harness.Pool("sandbox-baseline", "bare", 1, 1)
		pool.Spec.Docker.Mode = v1alpha1.DockerModeUnprivileged
		err := sys.Client.Create(ctx, pool)
		if err == nil || !strings.Contains(err.Error(), "needs template.runtimeClassName") {
			t.Errorf("creating an Unprivileged pool without runtimeClassName: %v, want it refused", err)
		}
	})
}

// checkPrivilegedModesRefused shows why the Unprivileged mode exists: where the baseline Pod
// Security Standard is enforced, the pods of the Privileged and Rootless modes are refused.
func checkPrivilegedModesRefused(t *testing.T, sys *harness.System, pool *v1alpha1.RunnerPool) {
	t.Helper()
	runner := &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{
		Name: "contrast", Namespace: pool.Namespace, Labels: map[string]string{v1alpha1.LabelPool: pool.Name},
	}}
	for _, mode := range []v1alpha1.DockerMode{v1alpha1.DockerModePrivileged, v1alpha1.DockerModeRootless} {
		other := pool.DeepCopy()
		other.Spec.Docker = v1alpha1.DockerSpec{Mode: mode}
		pod, err := runnerpod.BuildPod(other, runner, "{00000000-0000-4000-8000-000000000000}")
		if err != nil {
			t.Fatalf("build a %s pod: %v", mode, err)
		}
		err = sys.Client.Create(t.Context(), pod, client.DryRunAll)
		if err == nil || !strings.Contains(err.Error(), "privileged") {
			t.Errorf("a %s pod in a baseline namespace: %v, want it refused for being privileged", mode, err)
		}
	}
}
