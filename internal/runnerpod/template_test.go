package runnerpod

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

func withSpec(spec corev1.PodSpec) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.Template.Spec = &spec }
}

func emptyDir(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
}

// A template spec merges over the pod as a Deployment's template would: pod fields replaced,
// the operator's containers merged field by field, new containers and volumes added.
func TestTemplateSpecMergesOverThePod(t *testing.T) {
	runAs := int64(2000)
	pool := newPool(withSpec(corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{FSGroup: &runAs},
		TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
			MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.ScheduleAnyway,
		}},
		DNSConfig:   &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.10"}},
		DNSPolicy:   corev1.DNSNone,
		HostAliases: []corev1.HostAlias{{IP: "10.0.0.5", Hostnames: []string{"registry.internal"}}},
		NodeSelector: map[string]string{
			"node-pool": "ci",
		},
		Tolerations:       []corev1.Toleration{{Key: "ci", Operator: corev1.TolerationOpExists}},
		PriorityClassName: "ci",
		Volumes:           []corev1.Volume{emptyDir("cache")},
		Containers: []corev1.Container{
			{
				Name:         RunnerContainerName,
				Env:          []corev1.EnvVar{{Name: "JAVA_OPTS", Value: "-Xmx256m"}},
				VolumeMounts: []corev1.VolumeMount{{Name: "cache", MountPath: "/cache"}},
				Resources:    corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}},
				SecurityContext: &corev1.SecurityContext{
					Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID"}},
				},
				Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", "1"}}}},
			},
			{Name: "log-shipper", Image: "registry.example/shipper:1"},
		},
		InitContainers: []corev1.Container{
			{Name: DockerContainerName, Env: []corev1.EnvVar{{Name: "DOCKERD_ROOTLESS_ROOTLESSKIT_MTU", Value: "1400"}}},
			{Name: "prepull", Image: "docker:cli", Command: []string{"docker", "pull", "alpine"}},
		},
	}))
	pod := mustBuildPod(t, pool, newRunner())

	if pod.Spec.SecurityContext == nil || pod.Spec.SecurityContext.FSGroup == nil || *pod.Spec.SecurityContext.FSGroup != runAs {
		t.Errorf("pod securityContext %+v, want the template's", pod.Spec.SecurityContext)
	}
	if len(pod.Spec.TopologySpreadConstraints) != 1 || pod.Spec.DNSPolicy != corev1.DNSNone || pod.Spec.DNSConfig == nil || len(pod.Spec.HostAliases) != 1 {
		t.Errorf("pod fields not taken from the template: %+v", pod.Spec)
	}
	if pod.Spec.NodeSelector["node-pool"] != "ci" || pod.Spec.NodeSelector[nodeLabelArch] != "amd64" {
		t.Errorf("node selector %v: want the template's merged with the platform's", pod.Spec.NodeSelector)
	}
	if pod.Spec.PriorityClassName != "ci" || len(pod.Spec.Tolerations) != 1 {
		t.Errorf("priority class %q, tolerations %v", pod.Spec.PriorityClassName, pod.Spec.Tolerations)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever || pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Errorf("the operator's pod fields changed: restart %s, token %v", pod.Spec.RestartPolicy, pod.Spec.AutomountServiceAccountToken)
	}

	runner := container(t, pod, RunnerContainerName)
	if runner.Image != v1alpha1.DefaultRunnerImage {
		t.Errorf("runner image %s", runner.Image)
	}
	if v, n := envVar(runner, "JAVA_OPTS"); n != 1 || v.Value != "-Xmx256m" {
		t.Errorf("runner JAVA_OPTS %v (%d times)", v, n)
	}
	if v, _ := envVar(runner, EnvRunnerUUID); v.Value != testRunnerUUID {
		t.Errorf("runner lost its own environment: RUNNER_UUID %q", v.Value)
	}
	if got, _ := mountPath(runner, "cache"); got != "/cache" {
		t.Errorf("runner cache mount %q", got)
	}
	if got, _ := mountPath(runner, workVolumeName); got != defaultWorkingDirectory {
		t.Errorf("runner lost its work mount: %q", got)
	}
	if cpu := runner.Resources.Requests[corev1.ResourceCPU]; cpu.String() != "500m" {
		t.Errorf("runner CPU request %s, want the template's 500m", cpu.String())
	}
	if mem := runner.Resources.Limits[corev1.ResourceMemory]; mem.Cmp(v1alpha1.MinRunnerMemory) != 0 {
		t.Errorf("runner memory limit %s, want the pool's", mem.String())
	}
	sc := runner.SecurityContext
	if !slices.Contains(sc.Capabilities.Add, "SETUID") || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("runner securityContext %+v: want the template's capabilities over the operator's context", sc)
	}
	if runner.Lifecycle == nil || runner.Lifecycle.PreStop == nil {
		t.Error("runner lost the template's preStop hook")
	}

	docker := container(t, pod, DockerContainerName)
	if v, n := envVar(docker, "DOCKERD_ROOTLESS_ROOTLESSKIT_MTU"); n != 1 || v.Value != "1400" {
		t.Errorf("docker env %v", docker.Env)
	}
	if docker.RestartPolicy == nil || *docker.RestartPolicy != corev1.ContainerRestartPolicyAlways || docker.Args[0] != "dockerd" {
		t.Errorf("docker sidecar changed: %+v", docker)
	}
	if names := containerNames(pod.Spec.Containers); !slices.Equal(names, []string{RunnerContainerName, "log-shipper"}) {
		t.Errorf("containers %v", names)
	}
	// An init container after the sidecar starts once the daemon is up, so it can use it.
	if names := containerNames(pod.Spec.InitContainers); !slices.Equal(names, []string{DockerContainerName, "prepull"}) {
		t.Errorf("init containers %v", names)
	}
	if pod.Spec.Volumes[len(pod.Spec.Volumes)-1].Name != "cache" {
		t.Errorf("template volume not added: %v", pod.Spec.Volumes)
	}
}

func containerNames(cs []corev1.Container) []string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}

// The older template fields and the template spec are the same pod: one place for each field.
func TestTemplateSpecLegacyFieldsAgree(t *testing.T) {
	runtime := "kata"
	legacy := newPool(func(p *v1alpha1.RunnerPool) {
		p.Spec.Template.NodeSelector = map[string]string{"pool": "ci"}
		p.Spec.Template.RuntimeClassName = &runtime
		p.Spec.Template.Volumes = []corev1.Volume{emptyDir("extra")}
		p.Spec.Template.VolumeMounts = []corev1.VolumeMount{{Name: "extra", MountPath: "/extra"}}
	})
	spec := newPool(withSpec(corev1.PodSpec{
		NodeSelector:     map[string]string{"pool": "ci"},
		RuntimeClassName: &runtime,
		Volumes:          []corev1.Volume{emptyDir("extra")},
		Containers:       []corev1.Container{{Name: RunnerContainerName, VolumeMounts: []corev1.VolumeMount{{Name: "extra", MountPath: "/extra"}}}},
	}))
	if a, b := TemplateHash(legacy), TemplateHash(spec); a != b {
		t.Errorf("the same pod written with the older fields (%s) and with template.spec (%s) hash differently", a, b)
	}
}

func TestTemplateSpecConflictsAreRefused(t *testing.T) {
	runtime := "kata"
	tests := []struct {
		name    string
		pool    func(*v1alpha1.RunnerPool)
		wantErr string
	}{
		{"restart policy", withSpec(corev1.PodSpec{RestartPolicy: corev1.RestartPolicyAlways}), "spec.template.spec.restartPolicy Always"},
		{"node selector in both places", func(p *v1alpha1.RunnerPool) {
			p.Spec.Template.NodeSelector = map[string]string{"a": "b"}
			p.Spec.Template.Spec = &corev1.PodSpec{NodeSelector: map[string]string{"c": "d"}}
		}, "spec.template.nodeSelector and spec.template.spec.nodeSelector are both set"},
		{"runtime class in both places", func(p *v1alpha1.RunnerPool) {
			p.Spec.Template.RuntimeClassName = &runtime
			p.Spec.Template.Spec = &corev1.PodSpec{RuntimeClassName: &runtime}
		}, "spec.template.runtimeClassName and spec.template.spec.runtimeClassName"},
		{"platform's node label", withSpec(corev1.PodSpec{NodeSelector: map[string]string{nodeLabelArch: "arm64"}}), "kubernetes.io/arch"},
		{"operator's volume", withSpec(corev1.PodSpec{Volumes: []corev1.Volume{emptyDir(workVolumeName)}}), `volume name "work" is reserved`},
		{"runner image", withSpec(corev1.PodSpec{Containers: []corev1.Container{{Name: RunnerContainerName, Image: "mine"}}}), "spec.template.spec.containers[0].image: set the runner image in spec.runner.image"},
		{"runner pull policy", withSpec(corev1.PodSpec{Containers: []corev1.Container{{Name: RunnerContainerName, ImagePullPolicy: corev1.PullNever}}}), "spec.runner.imagePullPolicy"},
		{"runner's required env", withSpec(corev1.PodSpec{Containers: []corev1.Container{{Name: RunnerContainerName, Env: []corev1.EnvVar{{Name: EnvRunnerUUID, Value: "x"}}}}}), "sets RUNNER_UUID, which the operator sets"},
		{"runner env in both places", func(p *v1alpha1.RunnerPool) {
			p.Spec.Runner.Env = []corev1.EnvVar{{Name: "A", Value: "1"}}
			p.Spec.Template.Spec = &corev1.PodSpec{Containers: []corev1.Container{{Name: RunnerContainerName, Env: []corev1.EnvVar{{Name: "A", Value: "2"}}}}}
		}, "spec.runner.env and spec.template.spec.containers[0].env both set A"},
		{"runner resources in both places", func(p *v1alpha1.RunnerPool) {
			p.Spec.Runner.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}
			p.Spec.Template.Spec = &corev1.PodSpec{Containers: []corev1.Container{{Name: RunnerContainerName, Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}}}}}
		}, "spec.runner.resources and spec.template.spec.containers[0].resources"},
		{"runner mount over the work directory", withSpec(corev1.PodSpec{
			Volumes:    []corev1.Volume{emptyDir("x")},
			Containers: []corev1.Container{{Name: RunnerContainerName, VolumeMounts: []corev1.VolumeMount{{Name: "x", MountPath: "/tmp/x"}}}},
		}), "inside the working directory"},
		{"runner mount over the socket", withSpec(corev1.PodSpec{
			Volumes:    []corev1.Volume{emptyDir("x")},
			Containers: []corev1.Container{{Name: RunnerContainerName, VolumeMounts: []corev1.VolumeMount{{Name: "x", MountPath: "/var/run"}}}},
		}), "would hide the docker socket"},
		{"docker as a main container", withSpec(corev1.PodSpec{Containers: []corev1.Container{{Name: DockerContainerName}}}), "set it under spec.template.spec.initContainers"},
		{"runner as an init container", withSpec(corev1.PodSpec{InitContainers: []corev1.Container{{Name: RunnerContainerName}}}), "set it under spec.template.spec.containers"},
		{"the rootless helper's name", withSpec(corev1.PodSpec{InitContainers: []corev1.Container{{Name: VolumeOwnerContainerName, Image: "x"}}}), "reserved"},
		{"the layer cache prune container's name", withSpec(corev1.PodSpec{InitContainers: []corev1.Container{{Name: LayerCachePruneContainerName, Image: "x"}}}), "reserved"},
		{"docker image", withSpec(corev1.PodSpec{InitContainers: []corev1.Container{{Name: DockerContainerName, Image: "mine"}}}), "spec.docker.image"},
		{"docker args", withSpec(corev1.PodSpec{InitContainers: []corev1.Container{{Name: DockerContainerName, Args: []string{"--debug"}}}}), "spec.docker.args"},
		{"docker restart policy", withSpec(corev1.PodSpec{InitContainers: []corev1.Container{{Name: DockerContainerName, RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways)}}}), "native sidecar"},
		{"docker TLS variable", withSpec(corev1.PodSpec{InitContainers: []corev1.Container{{Name: DockerContainerName, Env: []corev1.EnvVar{{Name: "DOCKER_TLS_CERTDIR", Value: "/certs"}}}}}), "spec.docker.env sets DOCKER_TLS_CERTDIR"},
		{"docker mount over its storage", withSpec(corev1.PodSpec{
			Volumes:        []corev1.Volume{emptyDir("x")},
			InitContainers: []corev1.Container{{Name: DockerContainerName, VolumeMounts: []corev1.VolumeMount{{Name: "x", MountPath: "/var/lib/docker/overlay2"}}}},
		}), "would hide /var/lib/docker"},
		{"unprivileged without a runtime class in the spec either", func(p *v1alpha1.RunnerPool) {
			p.Spec.Docker.Mode = v1alpha1.DockerModeUnprivileged
			p.Spec.Template.Spec = &corev1.PodSpec{DNSPolicy: corev1.DNSDefault}
		}, "needs spec.template.runtimeClassName"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := newPool(tt.pool)
			_, err := BuildPod(pool, newRunner(), testRunnerUUID)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("BuildPod error %v, want one containing %q", err, tt.wantErr)
			}
			if verr := Validate(pool); verr == nil {
				t.Errorf("Validate accepts what BuildPod refuses")
			}
		})
	}
}

// The pool's docker settings become daemon flags, variables and mounts, and the step images the
// runner's variables.
func TestDockerSettings(t *testing.T) {
	mtu := int32(1400)
	settings := func(mode v1alpha1.DockerMode) func(*v1alpha1.RunnerPool) {
		return func(p *v1alpha1.RunnerPool) {
			p.Spec.Docker.Mode = mode
			p.Spec.Docker.RegistryMirrors = []string{"https://mirror.example"}
			p.Spec.Docker.InsecureRegistries = []string{"registry.internal:5000"}
			p.Spec.Docker.MTU = &mtu
			p.Spec.Docker.DaemonConfig = &v1alpha1.ConfigMapKeyReference{Name: "dockerd", Key: "daemon.json"}
			p.Spec.Docker.CACertificates = []v1alpha1.RegistryCA{
				{Registry: "registry.internal:5000", ConfigMapRef: &v1alpha1.ConfigMapKeyReference{Name: "ca", Key: "ca.pem"}},
				{Registry: "harbor.example", SecretRef: &v1alpha1.SecretKeyReference{Name: "harbor-ca", Key: "ca.crt"}},
			}
			p.Spec.Docker.Proxy = &v1alpha1.DockerProxy{HTTPSProxy: "http://proxy:3128", NoProxy: ".svc"}
			p.Spec.Docker.PullSecretRef = &v1alpha1.SecretReference{Name: "registry"}
			p.Spec.Docker.Args = []string{"--debug"}
			p.Spec.Docker.Env = []corev1.EnvVar{{Name: "DOCKERD_EXTRA", Value: "1"}}
			p.Spec.Runner.Images = v1alpha1.StepImages{Pause: "registry.internal:5000/pause:3", Clone: "registry.internal:5000/clone:1"}
		}
	}
	for _, tt := range []struct {
		mode      v1alpha1.DockerMode
		wantCerts string
	}{
		{v1alpha1.DockerModePrivileged, "/etc/docker/certs.d"},
		{v1alpha1.DockerModeRootless, "/home/rootless/.config/docker/certs.d"},
	} {
		t.Run(string(tt.mode), func(t *testing.T) {
			pod := mustBuildPod(t, newPool(settings(tt.mode)), newRunner())
			docker := container(t, pod, DockerContainerName)
			wantArgs := []string{"--registry-mirror=https://mirror.example", "--insecure-registry=registry.internal:5000",
				"--mtu=1400", "--config-file=/etc/runnerpool/dockerd/daemon.json", "--debug"}
			if got := docker.Args[len(docker.Args)-len(wantArgs):]; !slices.Equal(got, wantArgs) {
				t.Errorf("docker args %q, want them to end with %q", docker.Args, wantArgs)
			}
			if !strings.HasPrefix(docker.Args[1], "--host=") {
				t.Errorf("docker args %q: the socket comes first", docker.Args)
			}
			for name, want := range map[string]string{"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".svc", EnvDockerConfig: clientConfigDir, "DOCKERD_EXTRA": "1", "DOCKER_TLS_CERTDIR": ""} {
				if v, n := envVar(docker, name); n != 1 || v.Value != want {
					t.Errorf("docker %s = %q (%d times), want %q", name, v.Value, n, want)
				}
			}
			if _, n := envVar(docker, "HTTP_PROXY"); n != 0 {
				t.Error("docker HTTP_PROXY set though proxy.httpProxy is not")
			}
			if got, _ := mountPath(docker, registryCertsVolumeName); got != tt.wantCerts {
				t.Errorf("docker certs at %q, want %q", got, tt.wantCerts)
			}
			if got, _ := mountPath(docker, daemonConfigVolumeName); got != daemonConfigDir {
				t.Errorf("daemon.json at %q", got)
			}
			var certs *corev1.Volume
			for i := range pod.Spec.Volumes {
				if pod.Spec.Volumes[i].Name == registryCertsVolumeName {
					certs = &pod.Spec.Volumes[i]
				}
			}
			if certs == nil || len(certs.Projected.Sources) != 2 ||
				certs.Projected.Sources[0].ConfigMap.Items[0].Path != "registry.internal:5000/ca.crt" ||
				certs.Projected.Sources[1].Secret.Items[0].Path != "harbor.example/ca.crt" {
				t.Errorf("certs volume %+v", certs)
			}

			runner := container(t, pod, RunnerContainerName)
			for name, want := range map[string]string{EnvPauseImage: "registry.internal:5000/pause:3", EnvCloneImage: "registry.internal:5000/clone:1", EnvDockerConfig: clientConfigDir} {
				if v, n := envVar(runner, name); n != 1 || v.Value != want {
					t.Errorf("runner %s = %q (%d times), want %q", name, v.Value, n, want)
				}
			}
			if _, n := envVar(runner, EnvAuthProxyImage); n != 0 {
				t.Error("runner AUTH_PROXY_IMAGE set though images.authProxy is not")
			}
			if got, _ := mountPath(runner, clientConfigVolumeName); got != clientConfigDir {
				t.Errorf("runner docker config at %q", got)
			}
			if _, ok := mountPath(runner, registryCertsVolumeName); ok {
				t.Error("the runner mounts the daemon's certificates")
			}
		})
	}
}

func TestDockerSettingsConflictsAreRefused(t *testing.T) {
	tests := []struct {
		name    string
		pool    func(*v1alpha1.RunnerPool)
		wantErr string
	}{
		{"step image also in env", func(p *v1alpha1.RunnerPool) {
			p.Spec.Runner.Images.Pause = "mirror/pause"
			p.Spec.Runner.Env = []corev1.EnvVar{{Name: EnvPauseImage, Value: "other"}}
		}, "spec.runner.env sets PAUSE_IMAGE, which spec.runner.images.pause sets: keep one"},
		{"docker config also in runner env", func(p *v1alpha1.RunnerPool) {
			p.Spec.Docker.PullSecretRef = &v1alpha1.SecretReference{Name: "r"}
			p.Spec.Runner.Env = []corev1.EnvVar{{Name: EnvDockerConfig, Value: "/x"}}
		}, "which spec.docker.pullSecretRef sets"},
		{"proxy also in docker env", func(p *v1alpha1.RunnerPool) {
			p.Spec.Docker.Proxy = &v1alpha1.DockerProxy{HTTPProxy: "http://p:1"}
			p.Spec.Docker.Env = []corev1.EnvVar{{Name: "HTTP_PROXY", Value: "http://q:1"}}
		}, "spec.docker.env sets HTTP_PROXY, which spec.docker.proxy.httpProxy sets"},
		{"docker env twice", func(p *v1alpha1.RunnerPool) {
			p.Spec.Docker.Env = []corev1.EnvVar{{Name: "A"}, {Name: "A"}}
		}, "spec.docker.env sets A twice"},
		{"docker mount of an unknown volume", func(p *v1alpha1.RunnerPool) {
			p.Spec.Docker.VolumeMounts = []corev1.VolumeMount{{Name: "nope", MountPath: "/x"}}
		}, `refers to volume "nope"`},
		{"docker mount of the operator's volume", func(p *v1alpha1.RunnerPool) {
			p.Spec.Docker.VolumeMounts = []corev1.VolumeMount{{Name: dockerStorageVolumeName, MountPath: "/x"}}
		}, `refers to volume "docker-storage"`},
		{"docker mount over daemon.json", func(p *v1alpha1.RunnerPool) {
			p.Spec.Docker.DaemonConfig = &v1alpha1.ConfigMapKeyReference{Name: "d", Key: "k"}
			p.Spec.Template.Volumes = []corev1.Volume{emptyDir("x")}
			p.Spec.Docker.VolumeMounts = []corev1.VolumeMount{{Name: "x", MountPath: daemonConfigDir}}
		}, "would hide /etc/runnerpool/dockerd"},
		{"docker mount over the working directory", func(p *v1alpha1.RunnerPool) {
			p.Spec.Template.Volumes = []corev1.Volume{emptyDir("x")}
			p.Spec.Docker.VolumeMounts = []corev1.VolumeMount{{Name: "x", MountPath: "/tmp"}}
		}, "would hide /tmp"},
		{"CA listed twice", func(p *v1alpha1.RunnerPool) {
			ref := &v1alpha1.ConfigMapKeyReference{Name: "c", Key: "k"}
			p.Spec.Docker.CACertificates = []v1alpha1.RegistryCA{{Registry: "r.example", ConfigMapRef: ref}, {Registry: "r.example", ConfigMapRef: ref}}
		}, "registry r.example is listed twice"},
		{"CA registry a path", func(p *v1alpha1.RunnerPool) {
			p.Spec.Docker.CACertificates = []v1alpha1.RegistryCA{{Registry: "../etc", ConfigMapRef: &v1alpha1.ConfigMapKeyReference{Name: "c", Key: "k"}}}
		}, "is not a registry host"},
		{"CA without a source", func(p *v1alpha1.RunnerPool) {
			p.Spec.Docker.CACertificates = []v1alpha1.RegistryCA{{Registry: "r.example"}}
		}, "set exactly one of configMapRef and secretRef"},
		{"runner mount over the docker client config", func(p *v1alpha1.RunnerPool) {
			p.Spec.Template.Volumes = []corev1.Volume{emptyDir("x")}
			p.Spec.Template.VolumeMounts = []corev1.VolumeMount{{Name: "x", MountPath: clientConfigDir}}
		}, "docker client configuration"},
		{"user volume named like a settings volume", func(p *v1alpha1.RunnerPool) {
			p.Spec.Template.Volumes = []corev1.Volume{emptyDir(registryCertsVolumeName)}
		}, "reserved for the runner pod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := BuildPod(newPool(tt.pool), newRunner(), testRunnerUUID)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("BuildPod error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
