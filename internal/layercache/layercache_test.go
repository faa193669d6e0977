package layercache_test

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/layercache"
)

var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func free(i int) layercache.Claim {
	return layercache.Claim{Name: layercache.ClaimName("builds", i), Index: i, Current: true}
}

// held is claim i given to runner name (uid "uid-"+name) long enough ago to be released.
func held(i int, name string) layercache.Claim {
	c := free(i)
	c.Holder, c.HolderUID, c.TakenTime = name, "uid-"+name, now.Add(-time.Hour)
	return c
}

func justTaken(c layercache.Claim) layercache.Claim { c.TakenTime = now.Add(-time.Second); return c }
func stale(c layercache.Claim) layercache.Claim     { c.Current = false; return c }
func deleting(c layercache.Claim) layercache.Claim  { c.Deleting = true; return c }

func runner(name string) layercache.Runner { return layercache.Runner{Name: name, UID: "uid-" + name} }

func TestChoose(t *testing.T) {
	tests := []struct {
		name   string
		runner layercache.Runner
		claims []layercache.Claim
		max    int
		want   layercache.Choice
	}{
		{
			name: "a pool without claims creates the first",
			max:  3, runner: runner("r1"),
			want: layercache.Choice{Action: layercache.Create, Claim: "builds-layer-cache-0", Index: 0},
		},
		{
			name: "a runner keeps the claim it holds, even one made from older settings",
			max:  3, runner: runner("r1"),
			claims: []layercache.Claim{free(0), stale(held(1, "r1"))},
			want:   layercache.Choice{Action: layercache.Keep, Claim: "builds-layer-cache-1", Index: 1},
		},
		{
			name: "a free claim is reused before a new one is made, the lowest index first",
			max:  5, runner: runner("r3"),
			claims: []layercache.Claim{held(0, "r1"), free(3), free(2), held(1, "r2")},
			want:   layercache.Choice{Action: layercache.Take, Claim: "builds-layer-cache-2", Index: 2},
		},
		{
			name: "the claim the runner's status names is taken again while the cache lags",
			max:  5, runner: layercache.Runner{Name: "r3", UID: "uid-r3", Recorded: "builds-layer-cache-3"},
			claims: []layercache.Claim{free(2), free(3)},
			want:   layercache.Choice{Action: layercache.Take, Claim: "builds-layer-cache-3", Index: 3},
		},
		{
			name: "a claim held by an earlier Runner of the same name is not this runner's",
			max:  1, runner: layercache.Runner{Name: "r1", UID: "uid-new"},
			claims: []layercache.Claim{held(0, "r1")},
			want:   layercache.Choice{Action: layercache.Wait},
		},
		{
			name: "claims from older settings or being deleted are not taken; a new index is used",
			max:  4, runner: runner("r1"),
			claims: []layercache.Claim{stale(free(0)), deleting(free(1))},
			want:   layercache.Choice{Action: layercache.Create, Claim: "builds-layer-cache-2", Index: 2},
		},
		{
			name: "the lowest unused index fills a gap",
			max:  4, runner: runner("r3"),
			claims: []layercache.Claim{held(0, "r1"), held(2, "r2")},
			want:   layercache.Choice{Action: layercache.Create, Claim: "builds-layer-cache-1", Index: 1},
		},
		{
			name: "at maxRunners claims, all held: wait, never share",
			max:  2, runner: runner("r3"),
			claims: []layercache.Claim{held(0, "r1"), held(1, "r2")},
			want:   layercache.Choice{Action: layercache.Wait},
		},
		{
			name: "a lowered max counts the claims beyond it: wait until the pool deletes them",
			max:  1, runner: runner("r2"),
			claims: []layercache.Claim{held(3, "r1")},
			want:   layercache.Choice{Action: layercache.Wait},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := layercache.Choose("builds", tt.runner, tt.claims, tt.max)
			got.Reason = ""
			if got != tt.want {
				t.Errorf("Choose = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestTidyClaims(t *testing.T) {
	tests := []struct {
		name    string
		claims  []layercache.Claim
		runners []layercache.Runner
		mounted []string
		max     int
		off     bool
		want    layercache.Tidy
	}{
		{
			name:   "claims held by live runners and free claims within max stay",
			claims: []layercache.Claim{held(0, "r1"), free(1), free(2)}, runners: []layercache.Runner{runner("r1")}, max: 3,
		},
		{
			name:   "a claim whose holder is gone and whose pod is gone is released",
			claims: []layercache.Claim{held(0, "r1"), held(1, "r2")}, runners: []layercache.Runner{runner("r2")}, max: 3,
			want: layercache.Tidy{Release: []string{"builds-layer-cache-0"}},
		},
		{
			name:   "a claim whose holder is gone but whose pod still stops is kept",
			claims: []layercache.Claim{held(0, "r1")}, mounted: []string{"builds-layer-cache-0"}, max: 3,
		},
		{
			name:   "a claim taken moments ago by a runner the cache does not show yet is kept",
			claims: []layercache.Claim{justTaken(held(0, "r9"))}, max: 3,
		},
		{
			name:    "a holder replaced by a Runner of the same name is gone",
			claims:  []layercache.Claim{held(0, "r1")},
			runners: []layercache.Runner{{Name: "r1", UID: "uid-other"}}, max: 3,
			want: layercache.Tidy{Release: []string{"builds-layer-cache-0"}},
		},
		{
			name:   "free claims from older settings are deleted; held ones wait for their runner",
			claims: []layercache.Claim{stale(free(0)), stale(held(1, "r1")), free(2)}, runners: []layercache.Runner{runner("r1")}, max: 3,
			want: layercache.Tidy{Delete: []string{"builds-layer-cache-0"}},
		},
		{
			name:   "above max after a scale-down, the free claims with the highest indices go",
			claims: []layercache.Claim{free(0), held(1, "r1"), free(2), free(3), free(4)}, runners: []layercache.Runner{runner("r1")}, max: 2,
			want: layercache.Tidy{Delete: []string{"builds-layer-cache-4", "builds-layer-cache-3", "builds-layer-cache-2"}},
		},
		{
			name:   "held claims above max stay until free",
			claims: []layercache.Claim{held(0, "r1"), held(1, "r2"), free(2)}, runners: []layercache.Runner{runner("r1"), runner("r2")}, max: 1,
			want: layercache.Tidy{Delete: []string{"builds-layer-cache-2"}},
		},
		{
			name:   "a free claim still mounted by a stopping pod is not deleted yet",
			claims: []layercache.Claim{free(0), free(1)}, mounted: []string{"builds-layer-cache-1"}, max: 1,
			want: layercache.Tidy{Delete: []string{"builds-layer-cache-0"}},
		},
		{
			name:   "a pool that turned its layer cache off deletes every free claim",
			claims: []layercache.Claim{free(0), held(1, "r1"), free(2)}, runners: []layercache.Runner{runner("r1")}, max: 3, off: true,
			want: layercache.Tidy{Delete: []string{"builds-layer-cache-0", "builds-layer-cache-2"}},
		},
		{
			name:   "claims being deleted are left to the API server",
			claims: []layercache.Claim{deleting(free(0)), deleting(held(1, "gone"))}, max: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mounted := map[string]bool{}
			for _, m := range tt.mounted {
				mounted[m] = true
			}
			got := layercache.TidyClaims(tt.claims, tt.runners, mounted, tt.max, !tt.off, now)
			if !slices.Equal(got.Release, tt.want.Release) || !slices.Equal(got.Delete, tt.want.Delete) {
				t.Errorf("TidyClaims = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSettingsChangeWithWhatMakesAClaim(t *testing.T) {
	class, other := "fast", "slow"
	base := v1alpha1.LayerCacheSpec{Size: resource.MustParse("50Gi"), StorageClassName: &class, PruneAbovePercent: 80}
	same := base
	same.Size = resource.MustParse("51200Mi") // the same quantity written otherwise
	same.PruneAbovePercent = 90               // pruning is the pod's business, not the claim's
	same.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	if layercache.Settings(&base) != layercache.Settings(&same) {
		t.Errorf("equivalent settings hash differently")
	}
	for name, edit := range map[string]func(*v1alpha1.LayerCacheSpec){
		"size":          func(s *v1alpha1.LayerCacheSpec) { s.Size = resource.MustParse("60Gi") },
		"class":         func(s *v1alpha1.LayerCacheSpec) { s.StorageClassName = &other },
		"default class": func(s *v1alpha1.LayerCacheSpec) { s.StorageClassName = nil },
		"access modes": func(s *v1alpha1.LayerCacheSpec) {
			s.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}
		},
	} {
		changed := base
		edit(&changed)
		if layercache.Settings(&base) == layercache.Settings(&changed) {
			t.Errorf("changing the %s leaves the settings hash as it was", name)
		}
	}
}
