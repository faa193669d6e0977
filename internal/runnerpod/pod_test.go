package runnerpod

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

func TestBuildPodRefusesImpossiblePools(t *testing.T) {
	volume := func(name string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	}
	withMount := func(volumeName, path string) func(*v1alpha1.RunnerPool) {
		return func(p *v1alpha1.RunnerPool) {
			p.Spec.Template.Volumes = []corev1.Volume{volume("extra")}
			p.Spec.Template.VolumeMounts = []corev1.VolumeMount{{Name: volumeName, MountPath: path}}
		}
	}
	tests := []struct {
		name       string
		pool       func(*v1alpha1.RunnerPool)
		runner     func(*v1alpha1.Runner)
		uuid       string
		wantErrHas string
	}{
		{name: "runner not registered yet", uuid: "-", wantErrHas: "no Bitbucket UUID"},
		{
			name:       "runner in another namespace",
			runner:     func(r *v1alpha1.Runner) { r.Namespace = "other" },
			wantErrHas: `namespace "other"`,
		},
		{
			name:       "runner name too long for a label",
			runner:     func(r *v1alpha1.Runner) { r.Name = strings.Repeat("r", 64) },
			wantErrHas: "not a valid label value",
		},
		{
			name:       "runner name not a DNS name",
			runner:     func(r *v1alpha1.Runner) { r.Name = "Runner_1" },
			wantErrHas: "valid Secret name",
		},
		{
			name:       "runner of another workspace",
			runner:     func(r *v1alpha1.Runner) { r.Spec.Workspace = "{ffffffff-2c4d-4e5f-8a9b-0c1d2e3f4a5b}" },
			wantErrHas: "workspace {ffffffff",
		},
		{
			name:       "no workspace anywhere",
			pool:       func(p *v1alpha1.RunnerPool) { p.Spec.Bitbucket.Workspace = "" },
			runner:     func(r *v1alpha1.Runner) { r.Spec.Workspace = "" },
			wantErrHas: "workspace",
		},
		{
			name:       "unknown step size",
			pool:       func(p *v1alpha1.RunnerPool) { p.Spec.Runner.StepSize = "16x" },
			wantErrHas: `stepSize "16x"`,
		},
		{
			name:       "unknown platform",
			pool:       func(p *v1alpha1.RunnerPool) { p.Spec.Platform = "windows/amd64" },
			wantErrHas: `spec.platform "windows/amd64"`,
		},
		{
			name: "node selector asks for another architecture",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Platform = v1alpha1.PlatformLinuxARM64
				p.Spec.Template.NodeSelector = map[string]string{"kubernetes.io/arch": "amd64"}
			},
			wantErrHas: "sets kubernetes.io/arch=amd64 but spec.platform linux/arm64 needs kubernetes.io/arch=arm64",
		},
		{
			name: "node selector asks for another OS",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Template.NodeSelector = map[string]string{"kubernetes.io/os": "windows"}
			},
			wantErrHas: "kubernetes.io/os=windows",
		},
		{
			name: "runner memory request below 512Mi",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.Resources = &corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
				}
			},
			wantErrHas: "memory request 256Mi is below the 512Mi",
		},
		{
			name: "runner memory limit below 512Mi",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.Resources = &corev1.ResourceRequirements{
					Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("500M")},
				}
			},
			wantErrHas: "memory limit 500M is below the 512Mi",
		},
		{
			name: "docker cpu request above its limit",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Docker.Resources = &corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
				}
			},
			wantErrHas: "spec.docker.resources: cpu request 2 is above its limit 1",
		},
		{
			name: "work volume with both sources",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.WorkVolume = &v1alpha1.WorkVolumeSource{
					EmptyDir:  &corev1.EmptyDirVolumeSource{},
					Ephemeral: &corev1.EphemeralVolumeSource{},
				}
			},
			wantErrHas: "both emptyDir and ephemeral",
		},
		{
			name:       "user volume named like the work volume",
			pool:       func(p *v1alpha1.RunnerPool) { p.Spec.Template.Volumes = []corev1.Volume{volume("work")} },
			wantErrHas: `volume name "work" is reserved`,
		},
		{
			name:       "user volume named like the docker storage",
			pool:       func(p *v1alpha1.RunnerPool) { p.Spec.Template.Volumes = []corev1.Volume{volume("docker-storage")} },
			wantErrHas: `volume name "docker-storage" is reserved`,
		},
		{
			name:       "user volume listed twice",
			pool:       func(p *v1alpha1.RunnerPool) { p.Spec.Template.Volumes = []corev1.Volume{volume("a"), volume("a")} },
			wantErrHas: `volume "a" is listed twice`,
		},
		{
			name:       "user volume without a name",
			pool:       func(p *v1alpha1.RunnerPool) { p.Spec.Template.Volumes = []corev1.Volume{volume("")} },
			wantErrHas: "without a name",
		},
		{name: "mount at the working directory", pool: withMount("extra", "/tmp"), wantErrHas: "inside the working directory"},
		{name: "mount inside the working directory", pool: withMount("extra", "/tmp/cache"), wantErrHas: "inside the working directory"},
		{name: "mount at the working directory with a trailing slash", pool: withMount("extra", "/tmp/"), wantErrHas: "inside the working directory"},
		{name: "mount over the docker socket", pool: withMount("extra", "/var/run"), wantErrHas: "hide the docker socket"},
		{name: "mount over the build logs", pool: withMount("extra", "/var/lib/docker/containers"), wantErrHas: "build containers' logs"},
		{name: "mount inside the build logs", pool: withMount("extra", "/var/lib/docker/containers/x"), wantErrHas: "build containers' logs"},
		{name: "mount of an unknown volume", pool: withMount("missing", "/opt/x"), wantErrHas: `volume "missing", which is not in spec.template.volumes`},
		{name: "mount at a relative path", pool: withMount("extra", "opt/x"), wantErrHas: "absolute mountPath"},
		{
			name: "two mounts at one path",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Template.Volumes = []corev1.Volume{volume("a"), volume("b")}
				p.Spec.Template.VolumeMounts = []corev1.VolumeMount{{Name: "a", MountPath: "/opt/x"}, {Name: "b", MountPath: "/opt/x/"}}
			},
			wantErrHas: "two mounts at /opt/x",
		},
		{name: "working directory on the docker socket", pool: workingDirectory("/var/run"), wantErrHas: "overlaps /var/run"},
		{name: "working directory in docker storage", pool: workingDirectory("/var/lib/docker/builds"), wantErrHas: "overlaps /var/lib/docker"},
		{name: "working directory above docker storage", pool: workingDirectory("/var"), wantErrHas: "overlaps /var/run"},
		{name: "relative working directory", pool: workingDirectory("builds"), wantErrHas: "clean absolute path"},
		{name: "working directory with a trailing slash", pool: workingDirectory("/builds/"), wantErrHas: "clean absolute path"},
		{
			name:       "user env without a name",
			pool:       func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Env = []corev1.EnvVar{{Value: "x"}} },
			wantErrHas: "variable without a name",
		},
		{
			name:       "unknown docker mode",
			pool:       func(p *v1alpha1.RunnerPool) { p.Spec.Docker.Mode = "Sandboxed" },
			wantErrHas: `spec.docker.mode "Sandboxed"`,
		},
		{
			name:       "unprivileged docker without a sandboxed runtime",
			pool:       func(p *v1alpha1.RunnerPool) { p.Spec.Docker.Mode = v1alpha1.DockerModeUnprivileged },
			wantErrHas: "needs spec.template.runtimeClassName",
		},
		{
			name: "rootless docker with the image the CRD used to default",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Docker.Mode = v1alpha1.DockerModeRootless
				p.Spec.Docker.Image = "docker:dind"
			},
			wantErrHas: "docker:dind cannot run rootless",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, r := newPool(), newRunner()
			if tt.pool != nil {
				tt.pool(pool)
			}
			if tt.runner != nil {
				tt.runner(r)
			}
			uuid := testRunnerUUID
			if tt.uuid == "-" {
				uuid = ""
			}
			pod, err := BuildPod(pool, r, uuid)
			if err == nil {
				t.Fatalf("BuildPod succeeded, want an error containing %q", tt.wantErrHas)
			}
			if pod != nil {
				t.Errorf("BuildPod returned a pod along with error %v", err)
			}
			if !strings.Contains(err.Error(), tt.wantErrHas) {
				t.Errorf("error %q does not contain %q", err, tt.wantErrHas)
			}
		})
	}
}

func workingDirectory(dir string) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.Runner.WorkingDirectory = dir }
}

func TestBuildPodWithoutPoolOrRunner(t *testing.T) {
	if _, err := BuildPod(nil, newRunner(), testRunnerUUID); err == nil {
		t.Error("BuildPod(nil pool) succeeded")
	}
	if _, err := BuildPod(newPool(), nil, testRunnerUUID); err == nil {
		t.Error("BuildPod(nil runner) succeeded")
	}
}

func TestBuildPodShape(t *testing.T) {
	pod := mustBuildPod(t, newPool(), newRunner())

	if pod.Name != testRunner || pod.Namespace != testNamespace {
		t.Errorf("pod is %s/%s, want %s/%s", pod.Namespace, pod.Name, testNamespace, testRunner)
	}
	spec := pod.Spec
	if spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy = %s, want Never", spec.RestartPolicy)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the service account token is mounted")
	}
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		t.Error("service links are enabled")
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds != 30 {
		t.Errorf("terminationGracePeriodSeconds = %v, want 30", spec.TerminationGracePeriodSeconds)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 1 {
		t.Fatalf("pod has %d containers and %d init containers, want 1 and 1", len(spec.Containers), len(spec.InitContainers))
	}

	docker := container(t, pod, DockerContainerName)
	if docker.RestartPolicy == nil || *docker.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("docker is not a native sidecar (init container with restartPolicy Always)")
	}
	if docker.SecurityContext == nil || docker.SecurityContext.Privileged == nil || !*docker.SecurityContext.Privileged {
		t.Error("docker is not privileged")
	}
	if docker.StartupProbe == nil || docker.StartupProbe.Exec == nil {
		t.Error("docker has no exec startup probe")
	}
	if docker.LivenessProbe != nil {
		t.Error("docker has a liveness probe, which could kill a running build")
	}
	if !reflect.DeepEqual(docker.Args, []string{"dockerd", "--host=unix:///var/run/docker.sock"}) {
		t.Errorf("docker args = %q, want the daemon on the unix socket only", docker.Args)
	}
	if tls, n := envVar(docker, "DOCKER_TLS_CERTDIR"); n != 1 || tls.Value != "" {
		t.Errorf("DOCKER_TLS_CERTDIR = %+v (%d times), want it set once to empty", tls, n)
	}
	if got, _ := mountPath(docker, dockerContainersVolumeName); got != "/var/lib/docker/containers" {
		t.Errorf("docker mounts the build logs at %q", got)
	}

	runner := container(t, pod, RunnerContainerName)
	if runner.Image != v1alpha1.DefaultRunnerImage || runner.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("runner image = %s (%s), want %s (Always)", runner.Image, runner.ImagePullPolicy, v1alpha1.DefaultRunnerImage)
	}
	sc := runner.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("runner security context = %+v, want unprivileged without privilege escalation", sc)
	}
	for _, m := range runner.VolumeMounts {
		if m.Name == dockerContainersVolumeName && !m.ReadOnly {
			t.Error("runner mounts the build logs read-write")
		}
	}
	if got, _ := mountPath(runner, dockerRunVolumeName); got != "/var/run" {
		t.Errorf("runner mounts the docker socket directory at %q", got)
	}
}

func TestBuildPodEnv(t *testing.T) {
	secretRef := func(key string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: testRunner + "-oauth"}, Key: key,
		}}
	}
	requiredEnv := func(repository bool) []corev1.EnvVar {
		env := []corev1.EnvVar{{Name: "ACCOUNT_UUID", Value: testWorkspace}}
		if repository {
			env = append(env, corev1.EnvVar{Name: "REPOSITORY_UUID", Value: testRepository})
		}
		return append(env,
			corev1.EnvVar{Name: "RUNNER_UUID", Value: testRunnerUUID},
			corev1.EnvVar{Name: "OAUTH_CLIENT_ID", ValueFrom: secretRef("clientId")},
			corev1.EnvVar{Name: "OAUTH_CLIENT_SECRET", ValueFrom: secretRef("clientSecret")},
			corev1.EnvVar{Name: "WORKING_DIRECTORY", Value: "/tmp"},
			corev1.EnvVar{Name: "RUNTIME_PREREQUISITES_ENABLED", Value: "true"},
			corev1.EnvVar{Name: "DOCKER_HOST", Value: "unix:///var/run/docker.sock"},
		)
	}
	tests := []struct {
		name   string
		pool   func(*v1alpha1.RunnerPool)
		runner func(*v1alpha1.Runner)
		want   []corev1.EnvVar
	}{
		{name: "workspace runner", want: requiredEnv(false)},
		{
			name:   "repository runner",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Bitbucket.Repository = testRepository },
			runner: func(r *v1alpha1.Runner) { r.Spec.Repository = testRepository },
			want:   requiredEnv(true),
		},
		{
			name:   "runner written without its scope takes the pool's",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Bitbucket.Repository = testRepository },
			runner: func(r *v1alpha1.Runner) { r.Spec.Workspace = "" },
			want:   requiredEnv(true),
		},
		{
			name: "user variables follow in their order",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.Env = []corev1.EnvVar{{Name: "B", Value: "1"}, {Name: "A", Value: "2"}}
			},
			want: append(requiredEnv(false), corev1.EnvVar{Name: "B", Value: "1"}, corev1.EnvVar{Name: "A", Value: "2"}),
		},
		{
			name: "required variables cannot be overridden",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.Env = []corev1.EnvVar{
					{Name: "ACCOUNT_UUID", Value: "x"},
					{Name: "KEEP", Value: "1"},
					{Name: "REPOSITORY_UUID", Value: "x"},
					{Name: "WORKING_DIRECTORY", Value: "/elsewhere"},
				}
			},
			want: append(requiredEnv(false), corev1.EnvVar{Name: "KEEP", Value: "1"}),
		},
		{
			name: "a repeated user variable keeps its first place and last value",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.Env = []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}, {Name: "A", Value: "3"}}
			},
			want: append(requiredEnv(false), corev1.EnvVar{Name: "A", Value: "3"}, corev1.EnvVar{Name: "B", Value: "2"}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, r := newPool(), newRunner()
			if tt.pool != nil {
				tt.pool(pool)
			}
			if tt.runner != nil {
				tt.runner(r)
			}
			got := container(t, mustBuildPod(t, pool, r), RunnerContainerName).Env
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("env:\n got  %+v\n want %+v", got, tt.want)
			}
		})
	}
}

func TestBuildPodResources(t *testing.T) {
	q := resource.MustParse
	tests := []struct {
		name       string
		pool       func(*v1alpha1.RunnerPool)
		wantRunner corev1.ResourceRequirements
		wantDocker corev1.ResourceRequirements
	}{
		{
			name: "defaults",
			wantRunner: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: q("250m"), corev1.ResourceMemory: q("512Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: q("512Mi")},
			},
			wantDocker: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: q("1"), corev1.ResourceMemory: q("4Gi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: q("4Gi")},
			},
		},
		{
			name: "user cpu keeps the memory defaults",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: q("1")}}
				p.Spec.Docker.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: q("3")}}
				p.Spec.Runner.StepSize = "4x"
			},
			wantRunner: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceMemory: q("512Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: q("1"), corev1.ResourceMemory: q("512Mi")},
			},
			wantDocker: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: q("3"), corev1.ResourceMemory: q("16Gi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: q("16Gi")},
			},
		},
		{
			name: "user memory replaces the defaults",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: q("1Gi")}}
				p.Spec.Docker.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: q("6Gi")}}
			},
			wantRunner: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: q("250m"), corev1.ResourceMemory: q("1Gi")},
			},
			wantDocker: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: q("1")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: q("6Gi")},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := newPool()
			if tt.pool != nil {
				tt.pool(pool)
			}
			pod := mustBuildPod(t, pool, newRunner())
			assertResources(t, "runner", container(t, pod, RunnerContainerName).Resources, tt.wantRunner)
			assertResources(t, "docker", container(t, pod, DockerContainerName).Resources, tt.wantDocker)
		})
	}
}

func TestDockerMemoryFollowsStepSize(t *testing.T) {
	for size, want := range map[v1alpha1.StepSize]string{"1x": "4Gi", "2x": "8Gi", "4x": "16Gi", "8x": "32Gi"} {
		t.Run(string(size), func(t *testing.T) {
			pool := newPool(func(p *v1alpha1.RunnerPool) { p.Spec.Runner.StepSize = size })
			res := container(t, mustBuildPod(t, pool, newRunner()), DockerContainerName).Resources
			for side, list := range map[string]corev1.ResourceList{"request": res.Requests, "limit": res.Limits} {
				if got := list[corev1.ResourceMemory]; got.Cmp(resource.MustParse(want)) != 0 {
					t.Errorf("docker memory %s = %s, want %s", side, got.String(), want)
				}
			}
		})
	}
}

func assertResources(t *testing.T, who string, got, want corev1.ResourceRequirements) {
	t.Helper()
	for _, side := range []struct {
		name      string
		got, want corev1.ResourceList
	}{{"requests", got.Requests, want.Requests}, {"limits", got.Limits, want.Limits}} {
		if len(side.got) != len(side.want) {
			t.Errorf("%s %s = %v, want %v", who, side.name, side.got, side.want)
			continue
		}
		for name, w := range side.want {
			if g, ok := side.got[name]; !ok || g.Cmp(w) != 0 {
				t.Errorf("%s %s %s = %s, want %s", who, side.name, name, g.String(), w.String())
			}
		}
	}
}

func TestBuildPodNodeSelector(t *testing.T) {
	tests := []struct {
		name     string
		platform v1alpha1.Platform
		user     map[string]string
		want     map[string]string
	}{
		{name: "default platform", want: map[string]string{"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
		{name: "arm64", platform: v1alpha1.PlatformLinuxARM64, want: map[string]string{"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"}},
		{
			name: "user selector merged, agreeing arch accepted",
			user: map[string]string{"pool": "ci", "kubernetes.io/arch": "amd64"},
			want: map[string]string{"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "pool": "ci"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := newPool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Platform = tt.platform
				p.Spec.Template.NodeSelector = tt.user
			})
			if got := mustBuildPod(t, pool, newRunner()).Spec.NodeSelector; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("nodeSelector = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBuildPodMetadataOursWin(t *testing.T) {
	pool := newPool(func(p *v1alpha1.RunnerPool) {
		p.Spec.Template.Metadata.Labels = map[string]string{
			v1alpha1.LabelPool: "x", v1alpha1.LabelRunner: "y", "team": "platform",
		}
		p.Spec.Template.Metadata.Annotations = map[string]string{
			AnnotationTemplateHash: "x", v1alpha1.AnnotationRunnerUUID: "y", "note": "kept",
		}
	})
	pod := mustBuildPod(t, pool, newRunner())
	wantLabels := map[string]string{v1alpha1.LabelPool: testPool, v1alpha1.LabelRunner: testRunner, "team": "platform"}
	if !reflect.DeepEqual(pod.Labels, wantLabels) {
		t.Errorf("labels = %v, want %v", pod.Labels, wantLabels)
	}
	wantAnnotations := map[string]string{
		AnnotationTemplateHash: TemplateHash(pool), v1alpha1.AnnotationRunnerUUID: testRunnerUUID, "note": "kept",
	}
	if !reflect.DeepEqual(pod.Annotations, wantAnnotations) {
		t.Errorf("annotations = %v, want %v", pod.Annotations, wantAnnotations)
	}
}

func TestBuildPodTemplateOverrides(t *testing.T) {
	grace, runtimeClass := int64(0), "gvisor"
	pool := newPool(func(p *v1alpha1.RunnerPool) {
		p.Spec.Template.TerminationGracePeriodSeconds = &grace
		p.Spec.Template.RuntimeClassName = &runtimeClass
		p.Spec.Template.ServiceAccountName = "runner"
		p.Spec.Template.PriorityClassName = "ci"
		p.Spec.Template.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "registry"}}
		p.Spec.Template.Tolerations = []corev1.Toleration{{Key: "ci", Operator: corev1.TolerationOpExists}}
		p.Spec.Template.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{}}
	})
	spec := mustBuildPod(t, pool, newRunner()).Spec
	if *spec.TerminationGracePeriodSeconds != 0 {
		t.Errorf("terminationGracePeriodSeconds = %d, want the template's 0", *spec.TerminationGracePeriodSeconds)
	}
	if spec.RuntimeClassName == nil || *spec.RuntimeClassName != runtimeClass || spec.ServiceAccountName != "runner" ||
		spec.PriorityClassName != "ci" || len(spec.ImagePullSecrets) != 1 || len(spec.Tolerations) != 1 ||
		spec.Affinity == nil || spec.Affinity.NodeAffinity == nil {
		t.Errorf("template overrides lost: %+v", spec)
	}
	if *spec.AutomountServiceAccountToken {
		t.Error("a service account name turned the token mount on")
	}
}

func TestBuildPodWorkVolume(t *testing.T) {
	sizeLimit := resource.MustParse("20Gi")
	tests := []struct {
		name   string
		source *v1alpha1.WorkVolumeSource
		want   corev1.VolumeSource
	}{
		{name: "default emptyDir", want: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{name: "empty source", source: &v1alpha1.WorkVolumeSource{}, want: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{
			name:   "sized emptyDir",
			source: &v1alpha1.WorkVolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &sizeLimit}},
			want:   corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &sizeLimit}},
		},
		{
			name:   "ephemeral claim",
			source: &v1alpha1.WorkVolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{}}},
			want:   corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := newPool(func(p *v1alpha1.RunnerPool) { p.Spec.Runner.WorkVolume = tt.source })
			volumes := mustBuildPod(t, pool, newRunner()).Spec.Volumes
			if volumes[0].Name != "work" || !reflect.DeepEqual(volumes[0].VolumeSource, tt.want) {
				t.Errorf("first volume = %+v, want work with %+v", volumes[0], tt.want)
			}
		})
	}
}

// The runner asks the daemon to bind-mount paths under WORKING_DIRECTORY into build
// containers, so the path must be the same, and backed by the same volume, in both containers.
func TestWorkingDirectoryIsTheSameInBothContainers(t *testing.T) {
	for _, dir := range []string{"", "/tmp", "/builds", "/home/runner/work"} {
		t.Run("dir="+dir, func(t *testing.T) {
			pod := mustBuildPod(t, newPool(workingDirectory(dir)), newRunner())
			want := dir
			if want == "" {
				want = "/tmp"
			}
			assertSameWorkingDirectory(t, pod, want)
		})
	}
}

func assertSameWorkingDirectory(t testing.TB, pod *corev1.Pod, want string) {
	t.Helper()
	runner, docker := container(t, pod, RunnerContainerName), container(t, pod, DockerContainerName)
	runnerPath, inRunner := mountPath(runner, workVolumeName)
	dockerPath, inDocker := mountPath(docker, workVolumeName)
	env, n := envVar(runner, EnvWorkingDirectory)
	if !inRunner || !inDocker || runnerPath != dockerPath || n != 1 || env.Value != runnerPath {
		t.Errorf("work volume at %q (runner) and %q (docker), WORKING_DIRECTORY=%q (%d times)",
			runnerPath, dockerPath, env.Value, n)
	}
	if want != "" && runnerPath != want {
		t.Errorf("working directory = %q, want %q", runnerPath, want)
	}
}

func TestOAuthSecretNeverInPod(t *testing.T) {
	const clientID, clientSecret = "runner-client-id-8c1f", "runner-client-secret-2b7e"
	pool, r := newPool(), newRunner()
	secret := BuildSecret(r, testRunnerUUID, clientID, clientSecret)
	pod := mustBuildPod(t, pool, r)

	encoded, err := json.Marshal(pod)
	if err != nil {
		t.Fatalf("marshal pod: %v", err)
	}
	for _, value := range []string{clientID, clientSecret} {
		if strings.Contains(string(encoded), value) {
			t.Errorf("the pod contains the credential %q", value)
		}
	}
	runner := container(t, pod, RunnerContainerName)
	for name, key := range map[string]string{EnvOAuthClientID: v1alpha1.SecretKeyClientID, EnvOAuthClientSecret: v1alpha1.SecretKeyClientSecret} {
		v, n := envVar(runner, name)
		if n != 1 || v.Value != "" || v.ValueFrom == nil || v.ValueFrom.SecretKeyRef == nil ||
			v.ValueFrom.SecretKeyRef.Name != secret.Name || v.ValueFrom.SecretKeyRef.Key != key {
			t.Errorf("%s = %+v, want a reference to key %s of Secret %s", name, v, key, secret.Name)
		}
		if _, ok := secret.Data[key]; !ok {
			t.Errorf("Secret has no key %s", key)
		}
	}
}

func TestBuildPodLeavesThePoolAlone(t *testing.T) {
	pool := newPool(func(p *v1alpha1.RunnerPool) {
		p.Spec.Template.NodeSelector = map[string]string{"pool": "ci"}
		p.Spec.Template.Metadata.Labels = map[string]string{"team": "a"}
		p.Spec.Template.Tolerations = []corev1.Toleration{{Key: "ci"}}
		p.Spec.Runner.Env = []corev1.EnvVar{{Name: "A", Value: "1"}}
	})
	before := pool.DeepCopy()
	pod := mustBuildPod(t, pool, newRunner())
	if !reflect.DeepEqual(pool, before) {
		t.Fatal("BuildPod changed the pool")
	}
	pod.Spec.NodeSelector["pool"] = "changed"
	pod.Labels["team"] = "changed"
	pod.Spec.Tolerations[0].Key = "changed"
	pod.Spec.Containers[0].Env[len(pod.Spec.Containers[0].Env)-1].Value = "changed"
	if !reflect.DeepEqual(pool, before) {
		t.Error("the pod shares memory with the pool")
	}
}

func TestBuildPodIsDeterministic(t *testing.T) {
	pool := newPool(func(p *v1alpha1.RunnerPool) {
		p.Spec.Template.NodeSelector = map[string]string{"a": "1", "b": "2", "c": "3"}
		p.Spec.Template.Metadata.Labels = map[string]string{"x": "1", "y": "2"}
	})
	first, err := json.Marshal(mustBuildPod(t, pool, newRunner()))
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := json.Marshal(mustBuildPod(t, pool, newRunner()))
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(first) {
			t.Fatalf("two builds differ:\n%s\n%s", first, again)
		}
	}
}
