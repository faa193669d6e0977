package layercache

import (
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// NewClaim is the pool's claim at index i, given to runner at now. The caller sets the pool as
// its owner, so the claims go with the pool and not with any one runner.
func NewClaim(pool *v1alpha1.RunnerPool, i int, runner *v1alpha1.Runner, now time.Time) *corev1.PersistentVolumeClaim {
	spec := pool.Spec.Docker.LayerCache
	pvc := &corev1.PersistentVolumeClaim{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      ClaimName(pool.Name, i),
			Namespace: pool.Namespace,
			Labels:    map[string]string{v1alpha1.LabelPool: pool.Name},
			Annotations: map[string]string{
				AnnotationIndex:    strconv.Itoa(i),
				AnnotationSettings: Settings(spec),
			},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      AccessModes(spec),
			StorageClassName: spec.StorageClassName,
			VolumeMode:       ptr(corev1.PersistentVolumeFilesystem),
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: spec.Size.DeepCopy()},
			},
		},
	}
	Give(pvc, runner, now)
	return pvc
}

// Give records runner as the claim's holder.
func Give(pvc *corev1.PersistentVolumeClaim, runner *v1alpha1.Runner, now time.Time) {
	if pvc.Labels == nil {
		pvc.Labels = map[string]string{}
	}
	if pvc.Annotations == nil {
		pvc.Annotations = map[string]string{}
	}
	pvc.Labels[v1alpha1.LabelRunner] = runner.Name
	pvc.Annotations[AnnotationHolderUID] = string(runner.UID)
	pvc.Annotations[AnnotationTakenTime] = now.UTC().Format(time.RFC3339)
}

// Release frees the claim.
func Release(pvc *corev1.PersistentVolumeClaim) {
	delete(pvc.Labels, v1alpha1.LabelRunner)
	delete(pvc.Annotations, AnnotationHolderUID)
	delete(pvc.Annotations, AnnotationTakenTime)
}

// FromObject is what the decisions need of pvc; settings is Settings of the pool's layerCache.
// A claim without a readable index (edited by hand) gets one past every real index, so it is
// never taken for a slot the pool would create, and goes first when the pool trims.
func FromObject(pvc *corev1.PersistentVolumeClaim, settings string) Claim {
	index, err := strconv.Atoi(pvc.Annotations[AnnotationIndex])
	if err != nil || index < 0 {
		index = v1alpha1.MaxRunnersPerScope + 1
	}
	taken, _ := time.Parse(time.RFC3339, pvc.Annotations[AnnotationTakenTime])
	return Claim{
		Name:      pvc.Name,
		Index:     index,
		Holder:    pvc.Labels[v1alpha1.LabelRunner],
		HolderUID: pvc.Annotations[AnnotationHolderUID],
		TakenTime: taken,
		Current:   settings != "" && pvc.Annotations[AnnotationSettings] == settings,
		Deleting:  !pvc.DeletionTimestamp.IsZero(),
	}
}

// Mounted names the claims the pods mount.
func Mounted(pods []corev1.Pod) map[string]bool {
	out := map[string]bool{}
	for i := range pods {
		for _, v := range pods[i].Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				out[v.PersistentVolumeClaim.ClaimName] = true
			}
		}
	}
	return out
}

// RunnersOf is what the decisions need of the pool's Runners.
func RunnersOf(runners []v1alpha1.Runner) []Runner {
	out := make([]Runner, 0, len(runners))
	for i := range runners {
		out = append(out, Runner{Name: runners[i].Name, UID: string(runners[i].UID), Recorded: runners[i].Status.LayerCacheClaim})
	}
	return out
}

func ptr[T any](v T) *T { return &v }
