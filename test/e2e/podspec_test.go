package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// runnerPodOf returns the pod of the pool's only runner.
func runnerPodOf(t *testing.T, ns string, pool *v1alpha1.RunnerPool) *corev1.Pod {
	t.Helper()
	runner := onlyRunner(t, ns, pool)
	pod := &corev1.Pod{}
	if err := sys.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: runnerpod.PodName(runner)}, pod); err != nil {
		t.Fatalf("runner pod: %v", err)
	}
	return pod
}

func findContainer(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func envValue(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// TestAPoolForAnAirGappedClusterGetsItsRegistryDockerSettingsAndTemplateOnTheRunnerPod: a pool
// naming a private registry's copies of the step images, a registry mirror with its CA, a proxy,
// an MTU, a daemon.json, registry credentials and a pod template gets a runner pod the API
// server accepts, its runner comes ONLINE, and every setting is where the daemon and the runner
// read it.
func TestAPoolForAnAirGappedClusterGetsItsRegistryDockerSettingsAndTemplateOnTheRunnerPod(t *testing.T) {
	ns := namespace(t)
	const registry = "registry.internal:5000"
	mtu := int32(1400)
	fsGroup := int64(1000)
	pool := harness.Pool(ns, "airgapped", 1, 1)
	pool.Spec.Runner.Images = v1alpha1.StepImages{
		Pause:     registry + "/google/pause:3.9",
		AuthProxy: registry + "/atlassian/bitbucket-pipelines-auth-proxy:prod-stable",
		Clone:     registry + "/atlassian/bitbucket-pipelines-dvcs-tools:prod-stable",
	}
	pool.Spec.Docker = v1alpha1.DockerSpec{
		RegistryMirrors: []string{"https://" + registry},
		CACertificates:  []v1alpha1.RegistryCA{{Registry: registry, ConfigMapRef: &v1alpha1.ConfigMapKeyReference{Name: "registry-ca", Key: "ca.crt"}}},
		Proxy:           &v1alpha1.DockerProxy{HTTPSProxy: "http://proxy.internal:3128", NoProxy: "registry.internal"},
		MTU:             &mtu,
		DaemonConfig:    &v1alpha1.ConfigMapKeyReference{Name: "dockerd", Key: "daemon.json"},
		PullSecretRef:   &v1alpha1.SecretReference{Name: "registry"},
		Args:            []string{"--log-level=warn"},
	}
	pool.Spec.Template.Spec = &corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{FSGroup: &fsGroup},
		TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
			MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway,
		}},
		HostAliases:      []corev1.HostAlias{{IP: "10.0.0.5", Hostnames: []string{"registry.internal"}}},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "registry"}},
		Containers: []corev1.Container{
			{Name: runnerpod.RunnerContainerName, Env: []corev1.EnvVar{{Name: "JAVA_OPTS", Value: "-Xmx384m"}}},
			{Name: "metrics", Image: registry + "/exporter:1"},
		},
	}
	pool = createPool(t, pool)
	pod := runnerPodOf(t, ns, pool)

	runner := findContainer(pod.Spec.Containers, runnerpod.RunnerContainerName)
	docker := findContainer(pod.Spec.InitContainers, runnerpod.DockerContainerName)
	if runner == nil || docker == nil || findContainer(pod.Spec.Containers, "metrics") == nil {
		t.Fatalf("pod containers %v, init containers %v", pod.Spec.Containers, pod.Spec.InitContainers)
	}
	for name, want := range map[string]string{
		runnerpod.EnvPauseImage:     pool.Spec.Runner.Images.Pause,
		runnerpod.EnvAuthProxyImage: pool.Spec.Runner.Images.AuthProxy,
		runnerpod.EnvCloneImage:     pool.Spec.Runner.Images.Clone,
		runnerpod.EnvDockerConfig:   "/etc/runnerpool/docker-client",
		"JAVA_OPTS":                 "-Xmx384m",
	} {
		if got, ok := envValue(runner, name); !ok || got != want {
			t.Errorf("runner %s = %q, want %q", name, got, want)
		}
	}
	for _, arg := range []string{"--registry-mirror=https://" + registry, "--mtu=1400", "--config-file=/etc/runnerpool/dockerd/daemon.json", "--log-level=warn"} {
		if !slices.Contains(docker.Args, arg) {
			t.Errorf("docker args %q lack %s", docker.Args, arg)
		}
	}
	if got, _ := envValue(docker, "HTTPS_PROXY"); got != "http://proxy.internal:3128" {
		t.Errorf("docker HTTPS_PROXY %q", got)
	}
	mounts := map[string]string{}
	for _, m := range docker.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	if mounts["/etc/docker/certs.d"] == "" || mounts["/etc/runnerpool/dockerd"] == "" || mounts["/etc/runnerpool/docker-client"] == "" {
		t.Errorf("docker mounts %v", mounts)
	}
	if pod.Spec.SecurityContext == nil || pod.Spec.SecurityContext.FSGroup == nil || len(pod.Spec.TopologySpreadConstraints) != 1 ||
		len(pod.Spec.HostAliases) != 1 || len(pod.Spec.ImagePullSecrets) != 1 {
		t.Errorf("pod fields of the template missing: %+v", pod.Spec)
	}
	if sc := runner.SecurityContext; sc == nil || sc.SeccompProfile == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("runner securityContext %+v", runner.SecurityContext)
	}
	deleteAndWaitGone(t, pool, 90*time.Second)
}

// TestAPodTemplateThatClashesWithTheOperatorIsReportedOnThePool: a template spec that sets what
// the operator owns registers no runner; the pool says why in its Ready condition and an event,
// and once fixed it scales.
func TestAPodTemplateThatClashesWithTheOperatorIsReportedOnThePool(t *testing.T) {
	ns := namespace(t)
	pool := harness.Pool(ns, "clash", 1, 1)
	pool.Spec.Template.Spec = &corev1.PodSpec{Containers: []corev1.Container{{
		Name: runnerpod.RunnerContainerName,
		Env:  []corev1.EnvVar{{Name: runnerpod.EnvRunnerUUID, Value: "{00000000-0000-0000-0000-000000000001}"}},
	}}}
	pool = createPool(t, pool)
	const want = "spec.template.spec.containers[0].env sets RUNNER_UUID, which the operator sets for the runner"
	eventually(t, 30*time.Second, "the pool to report the clash", func() (bool, string) {
		c := condition(getPool(t, ns, pool.Name), v1alpha1.ConditionReady)
		if c == nil || c.Reason != controllers.ReasonInvalidPodTemplate {
			return false, fmt.Sprintf("Ready %+v", c)
		}
		if !strings.Contains(c.Message, want) {
			t.Fatalf("Ready message %q does not say %q", c.Message, want)
		}
		return true, ""
	})
	if !slicesContainPrefix(events(t, ns, pool.Name), controllers.ReasonInvalidPodTemplate+": ") {
		t.Errorf("no InvalidPodTemplate event: %v", events(t, ns, pool.Name))
	}
	if n := countObjects(t, ns, &v1alpha1.RunnerList{}, client.MatchingLabels{v1alpha1.LabelPool: pool.Name}); n != 0 {
		t.Errorf("%d Runners registered for a pool no pod can be built from", n)
	}
	if bb := bbRunners(controllers.BitbucketNamePrefix(pool)); len(bb) != 0 {
		t.Errorf("Bitbucket runners registered: %+v", bb)
	}

	patchSpec(t, pool, `{"spec":{"template":{"spec":{"containers":[{"name":"runner","env":[{"name":"JAVA_OPTS","value":"-Xmx384m"}]}]}}}}`)
	runnerPodOf(t, ns, pool)
	deleteAndWaitGone(t, pool, 90*time.Second)
}

// TestTheDocumentedPoolExamplesAreAcceptedAndBuildAPod: every RunnerPool in docs/examples is
// accepted by the API server as written, and a runner pod can be built from it as stored.
func TestTheDocumentedPoolExamplesAreAcceptedAndBuildAPod(t *testing.T) {
	ns := namespace(t)
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	pools := 0
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			var meta struct {
				Kind string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if meta.Kind != "RunnerPool" {
				continue
			}
			pool := &v1alpha1.RunnerPool{}
			if err := yaml.UnmarshalStrict([]byte(doc), pool); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			pool.Namespace = ns
			if err := sys.Client.Create(t.Context(), pool, client.DryRunAll); err != nil {
				t.Errorf("%s: refused by the API server: %v", file, err)
				continue
			}
			if err := runnerpod.Validate(pool); err != nil {
				t.Errorf("%s: no runner pod can be built: %v", file, err)
			}
			pools++
		}
	}
	if pools == 0 {
		t.Fatal("no RunnerPool in docs/examples")
	}
}
