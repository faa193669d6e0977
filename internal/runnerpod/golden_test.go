package runnerpod

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestBuildPodGolden(t *testing.T) {
	tests := []struct {
		name   string
		pool   *v1alpha1.RunnerPool
		runner *v1alpha1.Runner
	}{
		{
			name:   "default-workspace-1x",
			pool:   newPool(),
			runner: newRunner(),
		},
		{
			name: "repository-arm64-2x",
			pool: newPool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Bitbucket.Repository = testRepository
				p.Spec.Platform = v1alpha1.PlatformLinuxARM64
				p.Spec.Labels = []v1alpha1.RunnerLabel{"arm.builds"}
				p.Spec.Runner.StepSize = "2x"
				p.Spec.Runner.WorkingDirectory = "/builds"
				p.Spec.Runner.ImagePullPolicy = corev1.PullIfNotPresent
				p.Spec.Runner.Env = []corev1.EnvVar{
					{Name: "HTTPS_PROXY", Value: "http://proxy.internal:3128"},
					{Name: "NO_PROXY", Value: ".svc,.cluster.local"},
				}
				storageClass := "fast-ssd"
				p.Spec.Runner.WorkVolume = &v1alpha1.WorkVolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{
					VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
						Spec: corev1.PersistentVolumeClaimSpec{
							AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
							StorageClassName: &storageClass,
							Resources: corev1.VolumeResourceRequirements{
								Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("50Gi")},
							},
						},
					},
				}}
				p.Spec.Template = v1alpha1.PodTemplateOverrides{
					Metadata: v1alpha1.PodMetadata{
						Labels:      map[string]string{"team": "platform", v1alpha1.LabelPool: "spoofed"},
						Annotations: map[string]string{"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
					},
					NodeSelector: map[string]string{"node-pool": "ci-arm", "kubernetes.io/arch": "arm64"},
					Tolerations: []corev1.Toleration{{
						Key: "ci", Operator: corev1.TolerationOpEqual, Value: "runners", Effect: corev1.TaintEffectNoSchedule,
					}},
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
							Weight: 100,
							PodAffinityTerm: corev1.PodAffinityTerm{
								TopologyKey: "kubernetes.io/hostname",
								LabelSelector: &metav1.LabelSelector{
									MatchLabels: map[string]string{v1alpha1.LabelPool: testPool},
								},
							},
						}},
					}},
					ImagePullSecrets:   []corev1.LocalObjectReference{{Name: "registry"}},
					PriorityClassName:  "ci-runners",
					ServiceAccountName: "runner",
					Volumes: []corev1.Volume{{
						Name: "ca-bundle",
						VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "corporate-ca"},
						}},
					}},
					VolumeMounts: []corev1.VolumeMount{{Name: "ca-bundle", MountPath: "/etc/ssl/corporate", ReadOnly: true}},
				}
			}),
			runner: newRunner(func(r *v1alpha1.Runner) { r.Spec.Repository = testRepository }),
		},
		{
			name: "user-env-overrides-required",
			pool: newPool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.Env = []corev1.EnvVar{
					{Name: "RUNNER_UUID", Value: "{00000000-0000-4000-8000-000000000000}"},
					{Name: "DOCKER_HOST", Value: "tcp://elsewhere:2375"},
					{Name: "OAUTH_CLIENT_SECRET", Value: "not-from-the-secret"},
					{Name: "BUILD_CACHE", Value: "on"},
				}
			}),
			runner: newRunner(),
		},
		{
			name: "step-8x",
			pool: newPool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Runner.StepSize = "8x"
				p.Spec.Runner.Resources = &corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")},
				}
				p.Spec.Docker.Resources = &corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")},
				}
				grace := int64(600)
				p.Spec.Template.TerminationGracePeriodSeconds = &grace
			}),
			runner: newRunner(),
		},
		{
			name:   "docker-rootless",
			pool:   newPool(func(p *v1alpha1.RunnerPool) { p.Spec.Docker.Mode = v1alpha1.DockerModeRootless }),
			runner: newRunner(),
		},
		{
			name: "docker-layer-cache",
			pool: newPool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Docker.LayerCache = &v1alpha1.LayerCacheSpec{Size: resource.MustParse("50Gi"), PruneAbovePercent: 75}
			}),
			runner: newRunner(func(r *v1alpha1.Runner) { r.Status.LayerCacheClaim = testPool + "-layer-cache-2" }),
		},
		{
			name: "docker-unprivileged-sandboxed",
			pool: newPool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Docker.Mode = v1alpha1.DockerModeUnprivileged
				runtimeClass := "sysbox-runc"
				p.Spec.Template.RuntimeClassName = &runtimeClass
			}),
			runner: newRunner(),
		},
		{
			name: "private-registry-docker-settings",
			pool: newPool(func(p *v1alpha1.RunnerPool) {
				mtu := int32(1450)
				p.Spec.Runner.Image = "registry.internal:5000/atlassian/bitbucket-pipelines-runner:1"
				p.Spec.Runner.Images = v1alpha1.StepImages{
					Pause:     "registry.internal:5000/google/pause:3.9",
					AuthProxy: "registry.internal:5000/atlassian/bitbucket-pipelines-auth-proxy:prod-stable",
					Clone:     "registry.internal:5000/atlassian/bitbucket-pipelines-dvcs-tools:prod-stable",
				}
				p.Spec.Docker.Image = "registry.internal:5000/library/docker:dind"
				p.Spec.Docker.RegistryMirrors = []string{"https://registry.internal:5000"}
				p.Spec.Docker.MTU = &mtu
				p.Spec.Docker.CACertificates = []v1alpha1.RegistryCA{{
					Registry: "registry.internal:5000", ConfigMapRef: &v1alpha1.ConfigMapKeyReference{Name: "registry-ca", Key: "ca.crt"},
				}}
				p.Spec.Docker.Proxy = &v1alpha1.DockerProxy{HTTPSProxy: "http://proxy.internal:3128", NoProxy: "registry.internal,.svc"}
				p.Spec.Docker.DaemonConfig = &v1alpha1.ConfigMapKeyReference{Name: "dockerd", Key: "daemon.json"}
				p.Spec.Docker.PullSecretRef = &v1alpha1.SecretReference{Name: "registry"}
				p.Spec.Template.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "registry"}}
			}),
			runner: newRunner(),
		},
		{
			name: "template-spec",
			pool: newPool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Template.Metadata.Labels = map[string]string{"team": "platform"}
				p.Spec.Template.Spec = &corev1.PodSpec{
					SecurityContext: &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway,
						LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha1.LabelPool: testPool}},
					}},
					DNSConfig:   &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr("2")}}},
					HostAliases: []corev1.HostAlias{{IP: "10.0.0.5", Hostnames: []string{"registry.internal"}}},
					Tolerations: []corev1.Toleration{{Key: "ci", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
					Volumes:     []corev1.Volume{{Name: "maven", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "maven-settings"}}}}},
					Containers: []corev1.Container{
						{
							Name:         RunnerContainerName,
							Env:          []corev1.EnvVar{{Name: "JAVA_OPTS", Value: "-Xmx384m"}},
							VolumeMounts: []corev1.VolumeMount{{Name: "maven", MountPath: "/etc/maven", ReadOnly: true}},
						},
						{Name: "metrics", Image: "registry.internal:5000/exporter:1", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9100}}},
					},
					InitContainers: []corev1.Container{{
						Name:      DockerContainerName,
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}},
					}},
				}
			}),
			runner: newRunner(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := mustBuildPod(t, tt.pool, tt.runner)
			got, err := yaml.Marshal(pod)
			if err != nil {
				t.Fatalf("marshal pod: %v", err)
			}
			file := filepath.Join("testdata", tt.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatalf("write %s: %v", file, err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("read %s (run `go test ./internal/runnerpod -update` to create it): %v", file, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("pod differs from %s (run `go test ./internal/runnerpod -update` if the change is intended):\n%s",
					file, firstDifference(string(want), string(got)))
			}
		})
	}
}

// firstDifference shows the first differing line with a little context, which is what a reader
// of a failed golden test needs.
func firstDifference(want, got string) string {
	wantLines, gotLines := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(wantLines), len(gotLines)); i++ {
		var w, g string
		if i < len(wantLines) {
			w = wantLines[i]
		}
		if i < len(gotLines) {
			g = gotLines[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\n  want: %s\n  got:  %s", i+1, w, g)
		}
	}
	return "(only trailing bytes differ)"
}
