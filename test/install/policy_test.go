package install_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/operator"
)

const (
	// policyNamespace is judged by the policy of testdata/pool-policy.values.yaml, through
	// its namespaceSelector; unjudgedNamespace is not.
	policyNamespace   = "team-restricted"
	unjudgedNamespace = "team-free"
	// policyEnforceTimeout bounds the wait for the API server to pick up a new or changed
	// policy: it loads policies through an informer, a moment after helm returns.
	policyEnforceTimeout = 30 * time.Second
)

// warnings keeps the warnings the API server sent.
type warnings struct {
	mu    sync.Mutex
	texts []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.texts = append(w.texts, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	texts := w.texts
	w.texts = nil
	return texts
}

// The chart's opt-in RunnerPool policy on a real API server: installed with the values of the
// golden case, it refuses the pools that break a rule with a message naming the field, lets
// the others and the API's defaults through, judges only the selected namespaces and only
// spec changes of pools created before it, warns instead in Warn mode and goes with the
// release.
func TestPoolPolicyOnACluster(t *testing.T) {
	c, cp := startCluster(t)
	warned := &warnings{}
	config := rest.CopyConfig(cp.Config)
	config.WarningHandlerWithContext = warned
	pools, err := client.New(config, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for ns, labels := range map[string]map[string]string{
		helmNamespace:     nil,
		policyNamespace:   {"runnerpool.dev/restricted": "true"},
		unjudgedNamespace: nil,
	} {
		namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}
		if _, err := c.clientset.CoreV1().Namespaces().Create(ctx, namespace, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	const release = "rp"
	policyName := release + "-runnerpool-operator-pools"
	mustRun(t, c.env, c.helm, "install", release, chartDir, "--namespace", helmNamespace)
	c.waitCRDsEstablished(t)

	// A pool from before the policy that breaks it: the operator's writes and scaling must
	// still go through once the policy is on, or the pool could not even be deleted.
	legacy := policyPool(policyNamespace, "legacy", withHostPath)
	if err := pools.Create(ctx, legacy); err != nil {
		t.Fatalf("create pool before the policy: %v", err)
	}

	mustRun(t, c.env, c.helm, "upgrade", release, chartDir, "--namespace", helmNamespace, "--values", valuesFile("pool-policy"))
	hostPathMessage := "spec.template.volumes: volume host is a hostPath volume (/var/run/docker.sock), and hostPath volumes are not allowed (the chart's poolPolicy.allowHostPath)"
	waitFor(t, "the policy to refuse a hostPath pool", func() bool {
		err := pools.Create(ctx, policyPool(policyNamespace, "probe", withHostPath, withMode(v1alpha1.DockerModeRootless)), client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), hostPathMessage)
	})

	tests := []struct {
		name      string
		namespace string
		mutate    []func(*v1alpha1.RunnerPool)
		wantErr   string // empty: accepted
	}{
		{name: "default images, rootless", mutate: nil},
		{name: "allowed images by prefix and by repository", mutate: []func(*v1alpha1.RunnerPool){
			withRunnerImage("registry.example.com/runner:2"), withDockerImage("registry.example.com/ci/docker:28-dind-rootless"),
		}},
		{name: "allowed image by digest", mutate: []func(*v1alpha1.RunnerPool){
			withRunnerImage("registry.example.com/runner@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
		}},
		{name: "unprivileged in a sandbox, default docker image named, allowed ServiceAccount", mutate: []func(*v1alpha1.RunnerPool){
			withMode(v1alpha1.DockerModeUnprivileged), withRuntimeClass("sysbox-runc"), withDockerImage("docker:dind"), withServiceAccount("builder"),
		}},
		{name: "the default ServiceAccount named", mutate: []func(*v1alpha1.RunnerPool){withServiceAccount("default")}},
		{name: "an allowed Bitbucket URL", mutate: []func(*v1alpha1.RunnerPool){withAPIURL("https://bitbucket.example.com/api")}},
		{name: "an emptyDir volume", mutate: []func(*v1alpha1.RunnerPool){withEmptyDir}},

		{name: "hostPath volume", mutate: []func(*v1alpha1.RunnerPool){withHostPath}, wantErr: hostPathMessage},
		{name: "foreign runner image", mutate: []func(*v1alpha1.RunnerPool){withRunnerImage("evil.example.com/runner:1")},
			wantErr: "spec.runner.image evil.example.com/runner:1 is not an allowed image: leave it empty for the default, or name an image of registry.example.com/ci/, registry.example.com/runner (the chart's poolPolicy.allowedImages)"},
		{name: "repository that only starts like an allowed one", mutate: []func(*v1alpha1.RunnerPool){withRunnerImage("registry.example.com/runner-evil:1")},
			wantErr: "spec.runner.image registry.example.com/runner-evil:1 is not an allowed image"},
		{name: "foreign docker image", mutate: []func(*v1alpha1.RunnerPool){withDockerImage("docker.io/library/docker:dind-rootless")},
			wantErr: "spec.docker.image docker.io/library/docker:dind-rootless is not an allowed image"},
		{name: "other ServiceAccount", mutate: []func(*v1alpha1.RunnerPool){withServiceAccount("cluster-admin-sa")},
			wantErr: "spec.template.serviceAccountName cluster-admin-sa is not an allowed ServiceAccount: leave it empty for the namespace's default account, or name one of builder (the chart's poolPolicy.allowedServiceAccounts)"},
		{name: "privileged mode by default", mutate: []func(*v1alpha1.RunnerPool){withMode("")},
			wantErr: "spec.docker.mode Privileged is not allowed (it is the default when the mode is not set): set spec.docker.mode to Rootless or Unprivileged (the chart's poolPolicy.allowedDockerModes)"},
		{name: "privileged mode named", mutate: []func(*v1alpha1.RunnerPool){withMode(v1alpha1.DockerModePrivileged)},
			wantErr: "spec.docker.mode Privileged is not allowed"},
		{name: "foreign Bitbucket API URL", mutate: []func(*v1alpha1.RunnerPool){withAPIURL("https://collector.example.net")},
			wantErr: "spec.bitbucket.apiURL https://collector.example.net is not an allowed Bitbucket URL: leave it empty for the operator's, or name one of https://bitbucket.example.com/api (the chart's poolPolicy.allowedBitbucketURLs)"},
		{name: "foreign token URL", mutate: []func(*v1alpha1.RunnerPool){withTokenURL("https://collector.example.net/token")},
			wantErr: "spec.bitbucket.tokenURL https://collector.example.net/token is not an allowed Bitbucket URL"},

		{name: "allowed step images and template spec images", mutate: []func(*v1alpha1.RunnerPool){
			withStepImage("registry.example.com/ci/pause:3.9"), withTemplateContainer(corev1.Container{Name: "metrics", Image: "registry.example.com/ci/exporter:1"}),
		}},
		{name: "template spec without images or privileges", mutate: []func(*v1alpha1.RunnerPool){
			withTemplateContainer(corev1.Container{Name: "runner", Env: []corev1.EnvVar{{Name: "JAVA_OPTS", Value: "-Xmx384m"}}}),
		}},
		{name: "foreign step image", mutate: []func(*v1alpha1.RunnerPool){withStepImage("evil.example.com/pause:1")},
			wantErr: "spec.runner.images.pause evil.example.com/pause:1 is not an allowed image"},
		{name: "foreign image in the template spec", mutate: []func(*v1alpha1.RunnerPool){withTemplateContainer(corev1.Container{Name: "miner", Image: "evil.example.com/miner:1"})},
			wantErr: "spec.template.spec: image evil.example.com/miner:1 is not an allowed image"},
		{name: "privileged container in the template spec", mutate: []func(*v1alpha1.RunnerPool){withTemplateContainer(corev1.Container{
			Name: "runner", SecurityContext: &corev1.SecurityContext{Privileged: ptrTo(true)},
		})}, wantErr: "spec.template.spec: container runner would be privileged, gain capabilities or share the node's namespaces"},
		{name: "host network in the template spec", mutate: []func(*v1alpha1.RunnerPool){func(p *v1alpha1.RunnerPool) {
			p.Spec.Template.Spec = &corev1.PodSpec{HostNetwork: true}
		}}, wantErr: "spec.template.spec: hostNetwork would be privileged"},
		{name: "hostPath volume in the template spec", mutate: []func(*v1alpha1.RunnerPool){func(p *v1alpha1.RunnerPool) {
			p.Spec.Template.Spec = &corev1.PodSpec{Volumes: []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/docker.sock"}}}}}
		}}, wantErr: "spec.template.spec.volumes: volume host is a hostPath volume (/var/run/docker.sock), and hostPath volumes are not allowed"},
		{name: "other ServiceAccount in the template spec", mutate: []func(*v1alpha1.RunnerPool){func(p *v1alpha1.RunnerPool) {
			p.Spec.Template.Spec = &corev1.PodSpec{ServiceAccountName: "cluster-admin-sa"}
		}}, wantErr: "spec.template.serviceAccountName cluster-admin-sa is not an allowed ServiceAccount"},

		{name: "namespace outside the selector", namespace: unjudgedNamespace,
			mutate: []func(*v1alpha1.RunnerPool){withHostPath, withMode(v1alpha1.DockerModePrivileged), withRunnerImage("evil.example.com/runner:1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			namespace := tt.namespace
			if namespace == "" {
				namespace = policyNamespace
			}
			// Rootless first, so that a row changes only what it is about.
			pool := policyPool(namespace, "pool", append([]func(*v1alpha1.RunnerPool){withMode(v1alpha1.DockerModeRootless)}, tt.mutate...)...)
			err := pools.Create(ctx, pool, client.DryRunAll)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("pool refused: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("pool accepted, want a refusal containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("pool refused with:\n%v\nwant it to contain %q", err, tt.wantErr)
			}
		})
	}

	t.Run("a pool from before the policy", func(t *testing.T) {
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"example.com/touched":"yes"}}}`))
		if err := pools.Patch(ctx, legacy.DeepCopy(), patch); err != nil {
			t.Errorf("metadata change refused: %v", err)
		}
		if r := run(t, c.env, c.kubectl, "scale", "runnerpool/"+legacy.Name, "--namespace", legacy.Namespace, "--replicas=3"); r.err != nil {
			t.Errorf("scaling refused: %v\n%s", r.err, r.stderr)
		}
		spec := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"maxRunners":5}}`))
		if err := pools.Patch(ctx, legacy.DeepCopy(), spec); err == nil || !strings.Contains(err.Error(), hostPathMessage) {
			t.Errorf("spec change of a pool that breaks the policy: %v, want a refusal containing %q", err, hostPathMessage)
		}
		if err := pools.Delete(ctx, legacy.DeepCopy()); err != nil {
			t.Errorf("delete refused: %v", err)
		}
	})

	t.Run("warn mode accepts with a warning", func(t *testing.T) {
		mustRun(t, c.env, c.helm, "upgrade", release, chartDir, "--namespace", helmNamespace, "--values", valuesFile("pool-policy"),
			"--set", "poolPolicy.validationActions={Warn}")
		warned.take()
		var got []string
		waitFor(t, "the policy to accept a hostPath pool with a warning", func() bool {
			err := pools.Create(ctx, policyPool(policyNamespace, "warned", withHostPath, withMode(v1alpha1.DockerModeRootless)), client.DryRunAll)
			got = warned.take()
			return err == nil
		})
		if !containsSubstring(got, hostPathMessage) {
			t.Errorf("warnings %q, want one containing %q", got, hostPathMessage)
		}
		if err := pools.Create(ctx, policyPool(policyNamespace, "quiet", withMode(v1alpha1.DockerModeRootless)), client.DryRunAll); err != nil {
			t.Errorf("compliant pool refused: %v", err)
		}
		if got := warned.take(); len(got) != 0 {
			t.Errorf("compliant pool got warnings %q", got)
		}
	})

	mustRun(t, c.env, c.helm, "uninstall", release, "--namespace", helmNamespace, "--no-hooks")
	c.mustBeGone(t, "ValidatingAdmissionPolicy", func() error {
		_, err := c.clientset.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, policyName, metav1.GetOptions{})
		return err
	})
	c.mustBeGone(t, "ValidatingAdmissionPolicyBinding", func() error {
		_, err := c.clientset.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, policyName, metav1.GetOptions{})
		return err
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(policyEnforceTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", policyEnforceTimeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func containsSubstring(texts []string, sub string) bool {
	for _, s := range texts {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// policyPool is a valid pool that sets nothing the policy judges, changed by mutate.
func policyPool(namespace, name string, mutate ...func(*v1alpha1.RunnerPool)) *v1alpha1.RunnerPool {
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: v1alpha1.RunnerPoolSpec{
			Bitbucket: v1alpha1.BitbucketSpec{
				Workspace:            "{5b2f6c1e-8d4a-4e3b-9f21-7a6c0d9e4b10}",
				CredentialsSecretRef: v1alpha1.SecretReference{Name: "bitbucket-credentials"},
			},
			MinRunners: 1,
			MaxRunners: 4,
		},
	}
	for _, m := range mutate {
		m(pool)
	}
	return pool
}

func withHostPath(p *v1alpha1.RunnerPool) {
	p.Spec.Template.Volumes = append(p.Spec.Template.Volumes, corev1.Volume{
		Name:         "host",
		VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/docker.sock"}},
	})
}

func withEmptyDir(p *v1alpha1.RunnerPool) {
	p.Spec.Template.Volumes = append(p.Spec.Template.Volumes, corev1.Volume{
		Name:         "cache",
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
	})
}

func withMode(mode v1alpha1.DockerMode) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.Docker.Mode = mode }
}

func withRunnerImage(image string) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Image = image }
}

func withDockerImage(image string) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.Docker.Image = image }
}

func withServiceAccount(name string) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.Template.ServiceAccountName = name }
}

func withRuntimeClass(name string) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.Template.RuntimeClassName = &name }
}

func withAPIURL(url string) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.Bitbucket.APIURL = url }
}

func withTokenURL(url string) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.Bitbucket.TokenURL = url }
}

func withStepImage(image string) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Images.Pause = image }
}

func withTemplateContainer(c corev1.Container) func(*v1alpha1.RunnerPool) {
	return func(p *v1alpha1.RunnerPool) {
		if p.Spec.Template.Spec == nil {
			p.Spec.Template.Spec = &corev1.PodSpec{}
		}
		p.Spec.Template.Spec.Containers = append(p.Spec.Template.Spec.Containers, c)
	}
}

func ptrTo[T any](v T) *T { return &v }
