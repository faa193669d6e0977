package runnerpod

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

func TestNames(t *testing.T) {
	r := newRunner()
	if got := PodName(r); got != testRunner {
		t.Errorf("PodName = %q, want %q", got, testRunner)
	}
	if got := SecretName(r); got != testRunner+"-oauth" {
		t.Errorf("SecretName = %q, want %q", got, testRunner+"-oauth")
	}
}

func TestBuildSecret(t *testing.T) {
	r := newRunner()
	got := BuildSecret(r, testRunnerUUID, "id-1", "secret-1")
	immutable := true
	want := &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        testRunner + "-oauth",
			Namespace:   testNamespace,
			Labels:      map[string]string{v1alpha1.LabelPool: testPool, v1alpha1.LabelRunner: testRunner},
			Annotations: map[string]string{v1alpha1.AnnotationRunnerUUID: testRunnerUUID},
		},
		Type:      corev1.SecretTypeOpaque,
		Immutable: &immutable,
		Data: map[string][]byte{
			v1alpha1.SecretKeyClientID:     []byte("id-1"),
			v1alpha1.SecretKeyClientSecret: []byte("secret-1"),
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("BuildSecret:\n got  %+v\n want %+v", got, want)
	}

	unlabelled := newRunner(func(r *v1alpha1.Runner) { r.Labels = nil })
	if _, set := BuildSecret(unlabelled, testRunnerUUID, "a", "b").Labels[v1alpha1.LabelPool]; set {
		t.Error("a Runner without a pool label gave its Secret an empty pool label")
	}
}

func TestLabels(t *testing.T) {
	tests := []struct {
		name string
		pool func(*v1alpha1.RunnerPool)
		want []string
	}{
		{name: "default platform", want: []string{"linux", "self.hosted"}},
		{
			name: "amd64 with custom labels, sorted",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Platform = v1alpha1.PlatformLinuxAMD64
				p.Spec.Labels = []v1alpha1.RunnerLabel{"docker.builds", "big"}
			},
			want: []string{"big", "docker.builds", "linux", "self.hosted"},
		},
		{
			name: "arm64",
			pool: func(p *v1alpha1.RunnerPool) { p.Spec.Platform = v1alpha1.PlatformLinuxARM64 },
			want: []string{"linux.arm64", "self.hosted"},
		},
		{
			name: "platform labels override the defaults",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Platform = v1alpha1.PlatformLinuxARM64
				p.Spec.PlatformLabels = []v1alpha1.RunnerLabel{"self.hosted", "linux.arm"}
				p.Spec.Labels = []v1alpha1.RunnerLabel{"arm"}
			},
			want: []string{"arm", "linux.arm", "self.hosted"},
		},
		{
			name: "duplicates removed",
			pool: func(p *v1alpha1.RunnerPool) {
				p.Spec.Labels = []v1alpha1.RunnerLabel{"linux", "self.hosted", "gpu", "gpu"}
			},
			want: []string{"gpu", "linux", "self.hosted"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := newPool()
			if tt.pool != nil {
				tt.pool(pool)
			}
			if got := Labels(pool); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Labels = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTemplateHash(t *testing.T) {
	base := TemplateHash(newPool())
	if len(base) != 10 {
		t.Errorf("TemplateHash = %q, want 10 hex characters", base)
	}
	defaulted := newPool(withDefaults)
	if got := TemplateHash(defaulted); got != base {
		t.Errorf("a pool with the CRD defaults written out hashes to %s, the bare pool to %s", got, base)
	}

	tests := []struct {
		name        string
		mutate      func(*v1alpha1.RunnerPool)
		wantChanged bool
	}{
		{name: "runner image", mutate: func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Image = "mirror/runner:1" }, wantChanged: true},
		{name: "step size", mutate: func(p *v1alpha1.RunnerPool) { p.Spec.Runner.StepSize = "2x" }, wantChanged: true},
		{name: "platform", mutate: func(p *v1alpha1.RunnerPool) { p.Spec.Platform = v1alpha1.PlatformLinuxARM64 }, wantChanged: true},
		{name: "docker image", mutate: func(p *v1alpha1.RunnerPool) { p.Spec.Docker.Image = "docker:27-dind" }, wantChanged: true},
		{name: "runner env", mutate: func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Env = []corev1.EnvVar{{Name: "A"}} }, wantChanged: true},
		{name: "docker mode", mutate: func(p *v1alpha1.RunnerPool) { p.Spec.Docker.Mode = v1alpha1.DockerModeRootless }, wantChanged: true},
		{name: "docker mode written out", mutate: func(p *v1alpha1.RunnerPool) { p.Spec.Docker.Mode = v1alpha1.DockerModePrivileged }},
		{
			name:        "template toleration",
			mutate:      func(p *v1alpha1.RunnerPool) { p.Spec.Template.Tolerations = []corev1.Toleration{{Key: "ci"}} },
			wantChanged: true,
		},
		{
			name:        "template label",
			mutate:      func(p *v1alpha1.RunnerPool) { p.Spec.Template.Metadata.Labels = map[string]string{"a": "b"} },
			wantChanged: true,
		},
		{name: "scaling", mutate: func(p *v1alpha1.RunnerPool) { p.Spec.MaxRunners = 50; p.Spec.Scaling.IdleRunners = 3 }},
		{name: "custom labels", mutate: func(p *v1alpha1.RunnerPool) { p.Spec.Labels = []v1alpha1.RunnerLabel{"x"} }},
		{
			name: "recycling settings",
			mutate: func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.MaxAge = metav1.Duration{Duration: time.Hour}
				p.Spec.Runner.MaxSteps = 5
				p.Spec.Runner.Ephemeral = true
			},
		},
		{name: "pool status", mutate: func(p *v1alpha1.RunnerPool) { p.Status.Replicas = 4 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := newPool(tt.mutate)
			got := TemplateHash(pool)
			if changed := got != base; changed != tt.wantChanged {
				t.Errorf("hash changed = %v, want %v", changed, tt.wantChanged)
			}
			if again := TemplateHash(pool.DeepCopy()); again != got {
				t.Errorf("hash is not stable: %s then %s", got, again)
			}
		})
	}

	oneCPU := newPool(func(p *v1alpha1.RunnerPool) {
		p.Spec.Docker.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}
	})
	thousandMillis := newPool(func(p *v1alpha1.RunnerPool) {
		p.Spec.Docker.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1000m")}}
	})
	if TemplateHash(oneCPU) != TemplateHash(thousandMillis) {
		t.Error("cpu 1 and 1000m hash differently")
	}
}

func TestOutOfScope(t *testing.T) {
	pool := newPool(func(p *v1alpha1.RunnerPool) { p.UID = "0a1b2c3d-1111-2222-3333-444455556666" })
	repoPool := newPool(func(p *v1alpha1.RunnerPool) {
		p.UID = "0a1b2c3d-1111-2222-3333-444455556666"
		p.Spec.Bitbucket.Repository = "{aaaaaaaa-0000-0000-0000-000000000001}"
	})
	tests := []struct {
		name   string
		pool   *v1alpha1.RunnerPool
		runner *v1alpha1.Runner
		want   string // part of the reason; "" when in scope
	}{
		{"the pool's own runner", pool, newRunner(), ""},
		{"the workspace spelled another way", pool, newRunner(func(r *v1alpha1.Runner) {
			r.Spec.Workspace = v1alpha1.BitbucketUUID(strings.ToUpper(strings.Trim(testWorkspace, "{}")))
		}), ""},
		{"another workspace", pool, newRunner(func(r *v1alpha1.Runner) { r.Spec.Workspace = "{bbbbbbbb-0000-0000-0000-000000000000}" }), "workspace"},
		{"a repository of a workspace pool", pool, newRunner(func(r *v1alpha1.Runner) { r.Spec.Repository = "{aaaaaaaa-0000-0000-0000-000000000001}" }), "repository"},
		{"no repository for a repository pool", repoPool, newRunner(), "repository"},
		{"the repository pool's repository", repoPool, newRunner(func(r *v1alpha1.Runner) { r.Spec.Repository = "{AAAAAAAA-0000-0000-0000-000000000001}" }), ""},
		{"another pool's marker", pool, newRunner(func(r *v1alpha1.Runner) { r.Spec.BitbucketName = "rp-99999999-" + testRunner }), "marker"},
		{"no marker", pool, newRunner(func(r *v1alpha1.Runner) { r.Spec.BitbucketName = "production-runner-1" }), "marker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := OutOfScope(tt.pool, tt.runner)
			if (got == "") != (tt.want == "") || !strings.Contains(got, tt.want) {
				t.Errorf("OutOfScope = %q, want a reason about %q", got, tt.want)
			}
		})
	}
}
