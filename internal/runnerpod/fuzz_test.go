package runnerpod

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// FuzzBuildPod builds pods from arbitrary template overrides. Whatever the input, BuildPod must
// not panic, and every pod it returns must still be a working runner pod.
func FuzzBuildPod(f *testing.F) {
	type seed struct {
		volumeName, mountVolume, mountPath string
		envName, envValue                  string
		selectorKey, selectorValue         string
		workDir                            string
		arm64                              bool
		stepSize                           uint8
	}
	for _, s := range []seed{
		{volumeName: "ca", mountVolume: "ca", mountPath: "/etc/ssl/ca", envName: "A", envValue: "1", selectorKey: "pool", selectorValue: "ci", workDir: "/tmp"},
		{volumeName: "work", mountVolume: "work", mountPath: "/tmp", envName: "RUNNER_UUID", envValue: "x", selectorKey: "kubernetes.io/arch", selectorValue: "amd64", arm64: true},
		{volumeName: "x", mountVolume: "x", mountPath: "/var/run", envName: "WORKING_DIRECTORY", envValue: "/elsewhere", workDir: "/builds", stepSize: 3},
		{volumeName: "x", mountVolume: "docker-run", mountPath: "/opt/run", envName: "DOCKER_HOST", envValue: "tcp://x:2375", workDir: "/var/lib/docker/x"},
		{volumeName: "", mountVolume: "", mountPath: "", envName: "", workDir: "relative", stepSize: 9},
		{volumeName: "v", mountVolume: "v", mountPath: "/builds/../tmp/x", envName: "OAUTH_CLIENT_SECRET", selectorKey: "kubernetes.io/os", selectorValue: "linux", workDir: "/tmp"},
	} {
		f.Add(s.volumeName, s.mountVolume, s.mountPath, s.envName, s.envValue, s.selectorKey, s.selectorValue, s.workDir, s.arm64, s.stepSize)
	}
	stepSizes := []v1alpha1.StepSize{"1x", "2x", "4x", "8x", "", "3x"}

	f.Fuzz(func(t *testing.T, volumeName, mountVolume, mountPath, envName, envValue, selectorKey, selectorValue, workDir string, arm64 bool, stepSize uint8) {
		pool := newPool(func(p *v1alpha1.RunnerPool) {
			if arm64 {
				p.Spec.Platform = v1alpha1.PlatformLinuxARM64
			}
			p.Spec.Runner.StepSize = stepSizes[int(stepSize)%len(stepSizes)]
			p.Spec.Runner.WorkingDirectory = workDir
			p.Spec.Runner.Env = []corev1.EnvVar{{Name: envName, Value: envValue}, {Name: "FIXED", Value: "1"}}
			p.Spec.Template.NodeSelector = map[string]string{selectorKey: selectorValue}
			p.Spec.Template.Volumes = []corev1.Volume{{
				Name:         volumeName,
				VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
			}}
			p.Spec.Template.VolumeMounts = []corev1.VolumeMount{{Name: mountVolume, MountPath: mountPath}}
		})
		pod, err := BuildPod(pool, newRunner(), testRunnerUUID)
		if err != nil {
			if pod != nil {
				t.Fatalf("BuildPod returned a pod along with error %v", err)
			}
			return
		}
		assertRunnerPodInvariants(t, pool, pod)
	})
}

func assertRunnerPodInvariants(t *testing.T, pool *v1alpha1.RunnerPool, pod *corev1.Pod) {
	t.Helper()
	runner, docker := container(t, pod, RunnerContainerName), container(t, pod, DockerContainerName)

	for _, name := range []string{EnvAccountUUID, EnvRunnerUUID, EnvOAuthClientID, EnvOAuthClientSecret,
		EnvWorkingDirectory, EnvRuntimePrerequisitesEnabled, EnvDockerHost} {
		if _, n := envVar(runner, name); n != 1 {
			t.Errorf("runner env has %s %d times, want once", name, n)
		}
	}
	if v, _ := envVar(runner, EnvRunnerUUID); v.Value != testRunnerUUID {
		t.Errorf("RUNNER_UUID = %q, want %q", v.Value, testRunnerUUID)
	}
	if v, _ := envVar(runner, EnvDockerHost); v.Value != dockerSocketURL {
		t.Errorf("DOCKER_HOST = %q, want %q", v.Value, dockerSocketURL)
	}
	if sc := runner.SecurityContext; sc == nil || sc.Privileged == nil || *sc.Privileged {
		t.Error("runner container may be privileged")
	}
	if docker.RestartPolicy == nil || *docker.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("docker is not a native sidecar")
	}
	assertSameWorkingDirectory(t, pod, "")

	volumeNames := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if volumeNames[v.Name] {
			t.Errorf("volume %q appears twice", v.Name)
		}
		volumeNames[v.Name] = true
	}
	for _, c := range []*corev1.Container{runner, docker} {
		paths := map[string]bool{}
		for _, m := range c.VolumeMounts {
			if !volumeNames[m.Name] {
				t.Errorf("%s mounts unknown volume %q", c.Name, m.Name)
			}
			if paths[m.MountPath] {
				t.Errorf("%s has two mounts at %s", c.Name, m.MountPath)
			}
			paths[m.MountPath] = true
		}
	}

	wantArch := "amd64"
	if pool.Spec.Platform == v1alpha1.PlatformLinuxARM64 {
		wantArch = "arm64"
	}
	if got := pod.Spec.NodeSelector[nodeLabelArch]; got != wantArch {
		t.Errorf("node selector arch = %q, want %q", got, wantArch)
	}
	if got := pod.Spec.NodeSelector[nodeLabelOS]; got != "linux" {
		t.Errorf("node selector os = %q, want linux", got)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy = %s, want Never", pod.Spec.RestartPolicy)
	}
}
