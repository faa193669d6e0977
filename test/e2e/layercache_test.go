package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/layercache"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// staticVolumes creates n hostPath PersistentVolumes of a storage class of their own, for the
// control plane's volume binder to bind claims of that class to (there is no provisioner), and
// deletes them when the test ends. kwok plays the pods, so nothing is ever written to the paths.
func staticVolumes(t *testing.T, class string, n int, size string) {
	t.Helper()
	for i := range n {
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", class, i)},
			Spec: corev1.PersistentVolumeSpec{
				StorageClassName:              class,
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
					Path: "/var/lib/runnerpool-test/" + class + fmt.Sprint(i),
				}},
			},
		}
		if err := sys.Client.Create(t.Context(), pv); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sys.Client.Delete(context.Background(), pv) })
	}
}

// claimWatch records, while a test runs, every time two live pods mounted the same claim.
type claimWatch struct {
	mu     sync.Mutex
	shared []string
	stop   func()
}

func watchClaimsNeverShared(t *testing.T, ns string) *claimWatch {
	ctx, cancel := context.WithCancel(t.Context())
	w := &claimWatch{}
	done := make(chan struct{})
	w.stop = func() { cancel(); <-done }
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var pods corev1.PodList
			if err := sys.Client.List(ctx, &pods, client.InNamespace(ns)); err == nil {
				users := map[string][]string{}
				for _, p := range pods.Items {
					for _, v := range p.Spec.Volumes {
						if v.PersistentVolumeClaim != nil {
							users[v.PersistentVolumeClaim.ClaimName] = append(users[v.PersistentVolumeClaim.ClaimName], p.Name)
						}
					}
				}
				w.mu.Lock()
				for claim, pods := range users {
					if len(pods) > 1 {
						w.shared = append(w.shared, fmt.Sprintf("%s mounted by %v", claim, pods))
					}
				}
				w.mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return w
}

func (w *claimWatch) check(t *testing.T) {
	t.Helper()
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.shared) > 0 {
		t.Errorf("a claim was mounted by two pods at once: %v", slices.Compact(w.shared))
	}
}

// holders maps each of the pool's claims to the Runner its label names ("" when free).
func holders(t *testing.T, ns, pool string) map[string]string {
	t.Helper()
	var list corev1.PersistentVolumeClaimList
	countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: pool})
	out := map[string]string{}
	for _, pvc := range list.Items {
		out[pvc.Name] = pvc.Labels[v1alpha1.LabelRunner]
	}
	return out
}

// A pool with a layer cache gives each runner a claim of its own, hands the claim of a runner
// that went to the next one, keeps no more claims than maxRunners, and takes them all with it.
func TestLayerCacheClaimsAreReusedByTheNextRunnerNeverSharedAndGoWithThePool(t *testing.T) {
	ns := namespace(t)
	class := "layer-cache-" + ns
	if len(class) > 60 {
		class = class[:60]
	}
	class = strings.TrimRight(class, "-")
	staticVolumes(t, class, 4, "2Gi")
	never := watchClaimsNeverShared(t, ns)

	pool := harness.Pool(ns, "cached", 2, 2)
	pool.Spec.Scaling.IdleRunners = 0
	pool.Spec.Docker.LayerCache = &v1alpha1.LayerCacheSpec{Size: resource.MustParse("1Gi"), StorageClassName: &class}
	pool = createPool(t, pool)

	// Each runner holds one claim, which its status names and its pod mounts.
	runners := poolRunners(t, pool, 2)
	claimOf := map[string]string{}
	for _, rn := range runners {
		claimOf[rn.Name] = rn.Status.LayerCacheClaim
		var pod corev1.Pod
		if err := sys.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: rn.Name}, &pod); err != nil {
			t.Fatal(err)
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name == "docker-storage" && (v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != rn.Status.LayerCacheClaim) {
				t.Errorf("pod %s docker storage %+v, want its runner's claim %q", pod.Name, v.VolumeSource, rn.Status.LayerCacheClaim)
			}
		}
	}
	want := map[string]string{}
	for runner, claim := range claimOf {
		want[claim] = runner
	}
	if got := holders(t, ns, "cached"); len(got) != 2 || !maps.Equal(got, want) {
		t.Fatalf("claims and holders %v, want %v (runners' status: %v)", got, want, claimOf)
	}
	var pvc corev1.PersistentVolumeClaim
	for claim := range want {
		if err := sys.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: claim}, &pvc); err != nil {
			t.Fatal(err)
		}
		if ref := metav1.GetControllerOf(&pvc); ref == nil || ref.UID != pool.UID {
			t.Errorf("claim %s is owned by %+v, want the pool", claim, ref)
		}
		if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != class {
			t.Errorf("claim %s: phase %s class %v, want Bound of class %s", claim, pvc.Status.Phase, pvc.Spec.StorageClassName, class)
		}
	}

	// The runner that goes leaves its claim to the one that replaces it: the pool keeps at most
	// maxRunners claims and the other is held, so the new runner waits for it.
	gone := runners[0]
	deleteAndWaitGone(t, &gone, 60*time.Second)
	var next v1alpha1.Runner
	eventually(t, 60*time.Second, "the replacement runner to hold the claim of the one that went", func() (bool, string) {
		var list v1alpha1.RunnerList
		countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: "cached"})
		for _, rn := range list.Items {
			if _, old := claimOf[rn.Name]; !old && rn.Status.LayerCacheClaim != "" {
				next = rn
				return true, ""
			}
		}
		return false, fmt.Sprintf("claims %v", holders(t, ns, "cached"))
	})
	if next.Status.LayerCacheClaim != claimOf[gone.Name] {
		t.Errorf("replacement runner %s holds %s, want %s, the claim of %s", next.Name, next.Status.LayerCacheClaim, claimOf[gone.Name], gone.Name)
	}
	if got := holders(t, ns, "cached"); len(got) != 2 || got[claimOf[gone.Name]] != next.Name {
		t.Errorf("claims and holders %v after the replacement, want 2 claims, %s held by %s", got, claimOf[gone.Name], next.Name)
	}
	if ev := events(t, ns, next.Name); !slices.ContainsFunc(ev, func(e string) bool { return strings.HasPrefix(e, "LayerCacheTaken") }) {
		t.Errorf("replacement runner %s has no LayerCacheTaken event: %v", next.Name, ev)
	}

	// Scaled down to one runner, the pool frees the drained runner's claim and deletes it.
	patch := client.MergeFrom(pool.DeepCopy())
	pool.Spec.MinRunners, pool.Spec.MaxRunners = 1, 1
	if err := sys.Client.Patch(t.Context(), pool, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "one runner holding the pool's only claim", func() (bool, string) {
		var list v1alpha1.RunnerList
		countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: "cached"})
		got := holders(t, ns, "cached")
		if len(list.Items) != 1 || len(got) != 1 {
			return false, fmt.Sprintf("%d Runners, claims %v", len(list.Items), got)
		}
		return got[list.Items[0].Status.LayerCacheClaim] == list.Items[0].Name, fmt.Sprintf("runner %s, claims %v", list.Items[0].Name, got)
	})

	deleteAndWaitGone(t, pool, 90*time.Second)
	eventually(t, 30*time.Second, "the pool's claims to go with it", func() (bool, string) {
		got := holders(t, ns, "cached")
		names := make([]string, 0, len(got))
		for name := range got {
			names = append(names, name)
		}
		sort.Strings(names)
		return len(got) == 0, fmt.Sprintf("claims left: %v", names)
	})
	never.check(t)
	if !strings.HasPrefix(claimOf[gone.Name], "cached-layer-cache-") {
		t.Errorf("claim name %q does not follow %s", claimOf[gone.Name], layercache.ClaimName("cached", 0))
	}
}
