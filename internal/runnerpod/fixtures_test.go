package runnerpod

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

const (
	testNamespace  = "ci"
	testPool       = "builds"
	testRunner     = "builds-7f9c2"
	testWorkspace  = "{0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}"
	testRepository = "{5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d}"
	testRunnerUUID = "{11111111-2222-4333-8444-555555555555}"
)

// newPool is a pool as a user writes it: no CRD defaults applied.
func newPool(mutate ...func(*v1alpha1.RunnerPool)) *v1alpha1.RunnerPool {
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: testPool, Namespace: testNamespace},
		Spec: v1alpha1.RunnerPoolSpec{
			Bitbucket: v1alpha1.BitbucketSpec{
				Workspace:            testWorkspace,
				CredentialsSecretRef: v1alpha1.SecretReference{Name: "bitbucket-oauth"},
			},
		},
	}
	for _, m := range mutate {
		m(pool)
	}
	return pool
}

func newRunner(mutate ...func(*v1alpha1.Runner)) *v1alpha1.Runner {
	r := &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{
			Name:      testRunner,
			Namespace: testNamespace,
			Labels:    map[string]string{v1alpha1.LabelPool: testPool},
		},
		Spec: v1alpha1.RunnerSpec{
			Workspace:     testWorkspace,
			BitbucketName: "rp-0a1b2c3d-" + testRunner,
			Labels:        []v1alpha1.RunnerLabel{v1alpha1.LabelSelfHosted, v1alpha1.LabelLinux},
		},
	}
	for _, m := range mutate {
		m(r)
	}
	return r
}

// withDefaults applies what the CRD would default, to check that defaulted and bare pools agree.
func withDefaults(pool *v1alpha1.RunnerPool) {
	pool.Spec.Platform = v1alpha1.PlatformLinuxAMD64
	pool.Spec.Runner.Image = v1alpha1.DefaultRunnerImage
	pool.Spec.Runner.ImagePullPolicy = corev1.PullAlways
	pool.Spec.Runner.StepSize = "1x"
	pool.Spec.Runner.WorkingDirectory = "/tmp"
	pool.Spec.Runner.MaxAge = metav1.Duration{Duration: 24 * 60 * 60 * 1e9}
	pool.Spec.Docker.Mode = v1alpha1.DockerModePrivileged
	pool.Spec.Docker.Image = "docker:dind" // defaulted by the CRD before docker.mode existed
	pool.Spec.MinRunners = 1
	pool.Spec.MaxRunners = 10
}

func mustBuildPod(t testing.TB, pool *v1alpha1.RunnerPool, r *v1alpha1.Runner) *corev1.Pod {
	t.Helper()
	pod, err := BuildPod(pool, r, testRunnerUUID)
	if err != nil {
		t.Fatalf("BuildPod: %v", err)
	}
	return pod
}

func container(t testing.TB, pod *corev1.Pod, name string) *corev1.Container {
	t.Helper()
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	t.Fatalf("pod has no container %q", name)
	return nil
}

func mountPath(c *corev1.Container, volume string) (string, bool) {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath, true
		}
	}
	return "", false
}

func envVar(c *corev1.Container, name string) (corev1.EnvVar, int) {
	var found corev1.EnvVar
	count := 0
	for _, v := range c.Env {
		if v.Name == name {
			found = v
			count++
		}
	}
	return found, count
}
