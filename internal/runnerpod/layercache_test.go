package runnerpod

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

func withLayerCache(p *v1alpha1.RunnerPool) {
	p.Spec.Docker.LayerCache = &v1alpha1.LayerCacheSpec{Size: resource.MustParse("20Gi")}
}

func TestLayerCacheInThePod(t *testing.T) {
	tests := []struct {
		name       string
		pool       *v1alpha1.RunnerPool
		runner     *v1alpha1.Runner
		wantClaim  string
		wantPrune  string // a line of the prune script
		wantErr    string
		wantInits  []string
		wantNoInit bool
	}{
		{
			name:      "without a layer cache, docker storage is the pod's own emptyDir",
			pool:      newPool(),
			runner:    newRunner(func(r *v1alpha1.Runner) { r.Status.LayerCacheClaim = "ignored" }),
			wantInits: []string{DockerContainerName},
		},
		{
			name:      "the runner's claim backs docker storage, emptied first above the default 80%",
			pool:      newPool(withLayerCache),
			runner:    newRunner(func(r *v1alpha1.Runner) { r.Status.LayerCacheClaim = "builds-layer-cache-0" }),
			wantClaim: "builds-layer-cache-0",
			wantPrune: `if [ "$used" -gt 80 ]; then`,
			wantInits: []string{LayerCachePruneContainerName, DockerContainerName},
		},
		{
			name: "rootless: the prune runs before the volumes are handed to the daemon's user",
			pool: newPool(withLayerCache, func(p *v1alpha1.RunnerPool) {
				p.Spec.Docker.Mode = v1alpha1.DockerModeRootless
				p.Spec.Docker.LayerCache.PruneAbovePercent = 100
			}),
			runner:    newRunner(func(r *v1alpha1.Runner) { r.Status.LayerCacheClaim = "builds-layer-cache-1" }),
			wantClaim: "builds-layer-cache-1",
			wantPrune: `if [ "$used" -gt 100 ]; then`,
			wantInits: []string{LayerCachePruneContainerName, VolumeOwnerContainerName, DockerContainerName},
		},
		{
			name:    "a runner without its claim gets no pod",
			pool:    newPool(withLayerCache),
			runner:  newRunner(),
			wantErr: "holds no claim",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod, err := BuildPod(tt.pool, tt.runner, testRunnerUUID)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("BuildPod error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var inits []string
			for _, c := range pod.Spec.InitContainers {
				inits = append(inits, c.Name)
			}
			if strings.Join(inits, ",") != strings.Join(tt.wantInits, ",") {
				t.Errorf("init containers %v, want %v", inits, tt.wantInits)
			}
			for _, v := range pod.Spec.Volumes {
				if v.Name != dockerStorageVolumeName {
					continue
				}
				switch {
				case tt.wantClaim == "" && v.EmptyDir == nil:
					t.Errorf("docker storage %+v, want an emptyDir", v.VolumeSource)
				case tt.wantClaim != "" && (v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != tt.wantClaim):
					t.Errorf("docker storage %+v, want claim %s", v.VolumeSource, tt.wantClaim)
				}
			}
			if tt.wantPrune != "" {
				prune := pod.Spec.InitContainers[0]
				if script := prune.Command[len(prune.Command)-1]; !strings.Contains(script, tt.wantPrune) {
					t.Errorf("prune script lacks %q:\n%s", tt.wantPrune, script)
				}
				if sc := prune.SecurityContext; sc == nil || sc.Privileged == nil || *sc.Privileged {
					t.Errorf("prune container must not be privileged: %+v", sc)
				}
			}
		})
	}
}

func TestTemplateHashFollowsTheLayerCacheButNotTheClaim(t *testing.T) {
	plain := TemplateHash(newPool())
	cached := TemplateHash(newPool(withLayerCache))
	if plain == cached {
		t.Errorf("turning the layer cache on leaves the template hash at %s: idle pods would keep emptyDir storage", plain)
	}
	bigger := TemplateHash(newPool(withLayerCache, func(p *v1alpha1.RunnerPool) {
		p.Spec.Docker.LayerCache.Size = resource.MustParse("40Gi")
	}))
	if bigger != cached {
		t.Errorf("the claims' size changed the pods' hash; claims are replaced on their own, pods need not be")
	}
	a, errA := BuildPod(newPool(withLayerCache), newRunner(func(r *v1alpha1.Runner) { r.Status.LayerCacheClaim = "x-0" }), testRunnerUUID)
	b, errB := BuildPod(newPool(withLayerCache), newRunner(func(r *v1alpha1.Runner) { r.Status.LayerCacheClaim = "x-1" }), testRunnerUUID)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if a.Annotations[AnnotationTemplateHash] != b.Annotations[AnnotationTemplateHash] {
		t.Errorf("two runners of one pool on different claims have different template hashes")
	}
}

// A pool is checked before any runner holds a claim: its layer cache alone must not make it
// look broken.
func TestAPoolWithALayerCacheValidates(t *testing.T) {
	if err := Validate(newPool(withLayerCache)); err != nil {
		t.Errorf("Validate refused a pool with a layer cache: %v", err)
	}
}
