package runnerpod

import (
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// dockerModes are pools in every docker mode, each with what it needs to build.
var dockerModes = []struct {
	mode v1alpha1.DockerMode
	pool func(*v1alpha1.RunnerPool)
}{
	{mode: "", pool: func(*v1alpha1.RunnerPool) {}},
	{mode: v1alpha1.DockerModePrivileged, pool: func(p *v1alpha1.RunnerPool) { p.Spec.Docker.Mode = v1alpha1.DockerModePrivileged }},
	{mode: v1alpha1.DockerModeRootless, pool: func(p *v1alpha1.RunnerPool) { p.Spec.Docker.Mode = v1alpha1.DockerModeRootless }},
	{mode: v1alpha1.DockerModeUnprivileged, pool: func(p *v1alpha1.RunnerPool) {
		p.Spec.Docker.Mode = v1alpha1.DockerModeUnprivileged
		runtimeClass := "kata"
		p.Spec.Template.RuntimeClassName = &runtimeClass
	}},
}

func TestDockerModes(t *testing.T) {
	tests := []struct {
		mode           v1alpha1.DockerMode
		wantImage      string
		wantPrivileged bool
		wantUser       *int64 // nil: the image's user
		wantArgs       []string
		wantProbe      []string
		wantSocketDir  string
		wantInit       []string // init container names, in order
	}{
		{
			mode: "", wantImage: "docker:dind", wantPrivileged: true,
			wantArgs:      []string{"dockerd", "--host=unix:///var/run/docker.sock"},
			wantProbe:     []string{"docker", "info"},
			wantSocketDir: "/var/run", wantInit: []string{DockerContainerName},
		},
		{
			mode: v1alpha1.DockerModePrivileged, wantImage: "docker:dind", wantPrivileged: true,
			wantArgs:      []string{"dockerd", "--host=unix:///var/run/docker.sock"},
			wantProbe:     []string{"docker", "info"},
			wantSocketDir: "/var/run", wantInit: []string{DockerContainerName},
		},
		{
			mode: v1alpha1.DockerModeRootless, wantImage: "docker:dind-rootless", wantPrivileged: true, wantUser: ptr(int64(1000)),
			wantArgs:      []string{"dockerd", "--host=unix:///run/user/1000/docker.sock", "--data-root=/var/lib/docker"},
			wantProbe:     []string{"docker", "--host=unix:///run/user/1000/docker.sock", "info"},
			wantSocketDir: "/run/user/1000", wantInit: []string{VolumeOwnerContainerName, DockerContainerName},
		},
		{
			mode: v1alpha1.DockerModeUnprivileged, wantImage: "docker:dind", wantPrivileged: false,
			wantArgs:      []string{"dockerd", "--host=unix:///var/run/docker.sock"},
			wantProbe:     []string{"docker", "info"},
			wantSocketDir: "/var/run", wantInit: []string{DockerContainerName},
		},
	}
	for _, tt := range tests {
		t.Run("mode="+string(tt.mode), func(t *testing.T) {
			pool := newPool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Docker.Mode = tt.mode
				if tt.mode == v1alpha1.DockerModeUnprivileged {
					runtimeClass := "sysbox-runc"
					p.Spec.Template.RuntimeClassName = &runtimeClass
				}
			})
			pod := mustBuildPod(t, pool, newRunner())
			var initNames []string
			for _, c := range pod.Spec.InitContainers {
				initNames = append(initNames, c.Name)
			}
			if !slices.Equal(initNames, tt.wantInit) {
				t.Errorf("init containers %v, want %v", initNames, tt.wantInit)
			}
			docker := container(t, pod, DockerContainerName)
			if docker.Image != tt.wantImage {
				t.Errorf("docker image %s, want %s", docker.Image, tt.wantImage)
			}
			sc := docker.SecurityContext
			if sc == nil || sc.Privileged == nil || *sc.Privileged != tt.wantPrivileged {
				t.Errorf("docker security context %+v, want privileged=%v", sc, tt.wantPrivileged)
			}
			if !reflect.DeepEqual(sc.RunAsUser, tt.wantUser) {
				t.Errorf("docker runs as %v, want %v", deref(sc.RunAsUser), deref(tt.wantUser))
			}
			if tt.wantUser != nil && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) {
				t.Error("a rootless daemon may run as root")
			}
			if !slices.Equal(docker.Args, tt.wantArgs) {
				t.Errorf("docker args %q, want %q", docker.Args, tt.wantArgs)
			}
			if got := docker.StartupProbe.Exec.Command; !slices.Equal(got, tt.wantProbe) {
				t.Errorf("docker probe %q, want %q", got, tt.wantProbe)
			}
			if got, _ := mountPath(docker, dockerRunVolumeName); got != tt.wantSocketDir {
				t.Errorf("docker mounts the socket volume at %s, want %s", got, tt.wantSocketDir)
			}
			// The runner's side never changes: it reads the build logs and finds the
			// socket where the Bitbucket runner expects them.
			for volume, want := range map[string]string{dockerContainersVolumeName: dockerContainersPath, dockerStorageVolumeName: dockerStoragePath} {
				if got, _ := mountPath(docker, volume); got != want {
					t.Errorf("docker mounts %s at %s, want %s", volume, got, want)
				}
			}
			assertRunnerPodInvariants(t, pool, pod)
		})
	}
}

// The rootless daemon's helper runs as root only to chown, with no other capability and no
// way to gain one.
func TestRootlessVolumeOwnerHasOnlyChown(t *testing.T) {
	pool := newPool(func(p *v1alpha1.RunnerPool) {
		p.Spec.Docker.Mode = v1alpha1.DockerModeRootless
		p.Spec.Docker.Image = "registry.example.com/docker:27-dind-rootless"
	})
	pod := mustBuildPod(t, pool, newRunner())
	owner := container(t, pod, VolumeOwnerContainerName)
	if owner.RestartPolicy != nil {
		t.Error("the volume owner is a sidecar, want a plain init container that ends")
	}
	if owner.Image != pool.Spec.Docker.Image {
		t.Errorf("volume owner image %s, want the daemon's %s", owner.Image, pool.Spec.Docker.Image)
	}
	sc := owner.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Fatalf("volume owner security context %+v, want unprivileged without escalation", sc)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"CHOWN"}) {
		t.Errorf("volume owner capabilities %+v, want all dropped but CHOWN", sc.Capabilities)
	}
	if !slices.Equal(owner.Command, []string{"chown", "1000:1000", "/run/user/1000", "/var/lib/docker", "/var/lib/docker/containers"}) {
		t.Errorf("volume owner command %q", owner.Command)
	}
	for _, m := range owner.VolumeMounts {
		if m.Name == workVolumeName {
			t.Error("the volume owner touches the working directory")
		}
	}
}

// However docker-in-docker runs, the runner container, which holds the runner's OAuth client
// and talks to Bitbucket, is never privileged and cannot gain privileges.
func TestRunnerContainerIsUnprivilegedInEveryMode(t *testing.T) {
	for _, m := range dockerModes {
		t.Run("mode="+string(m.mode), func(t *testing.T) {
			pod := mustBuildPod(t, newPool(m.pool), newRunner())
			runner := container(t, pod, RunnerContainerName)
			sc := runner.SecurityContext
			if sc == nil || sc.Privileged == nil || *sc.Privileged {
				t.Errorf("runner container may be privileged: %+v", sc)
			}
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("runner container may gain privileges: %+v", sc)
			}
			if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("runner container does not drop every capability: %+v", sc)
			} else if !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER"}) {
				t.Errorf("runner container keeps capabilities %v, want only CHOWN, DAC_OVERRIDE and FOWNER (the working directory's files)", sc.Capabilities.Add)
			}
			if sc == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("runner container is not under the runtime's default seccomp profile: %+v", sc)
			}
			if pod.Spec.HostNetwork || pod.Spec.HostPID || pod.Spec.HostIPC {
				t.Error("runner pod shares a host namespace")
			}
			for _, v := range pod.Spec.Volumes {
				if v.HostPath != nil {
					t.Errorf("runner pod mounts host path %s", v.HostPath.Path)
				}
			}
			if got, _ := mountPath(runner, dockerRunVolumeName); got != dockerRunPath {
				t.Errorf("runner finds the docker socket under %s, want %s", got, dockerRunPath)
			}
			if v, _ := envVar(runner, EnvDockerHost); v.Value != dockerSocketURL {
				t.Errorf("runner DOCKER_HOST %q, want %q", v.Value, dockerSocketURL)
			}
		})
	}
}

func deref(p *int64) any {
	if p == nil {
		return "the image's user"
	}
	return *p
}
