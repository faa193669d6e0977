package runnerpod

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// LayerCachePruneContainerName is the init container that empties a filled layer cache claim
// before the daemon starts on it.
const LayerCachePruneContainerName = "docker-cache-prune"

// DefaultPruneAbovePercent is the CRD's default of spec.docker.layerCache.pruneAbovePercent.
const DefaultPruneAbovePercent int32 = 80

var (
	pruneCPU    = resource.MustParse("10m")
	pruneMemory = resource.MustParse("32Mi")
)

// dockerStorageVolume backs /var/lib/docker: a fresh emptyDir per pod, which is what keeps
// images and containers from piling up, or the runner's layer cache claim.
func dockerStorageVolume(cache *v1alpha1.LayerCacheSpec, r *v1alpha1.Runner) (corev1.Volume, error) {
	volume := corev1.Volume{Name: dockerStorageVolumeName}
	if cache == nil {
		volume.EmptyDir = &corev1.EmptyDirVolumeSource{}
		return volume, nil
	}
	if r.Status.LayerCacheClaim == "" {
		return volume, errors.New("the pool keeps a layer cache and the runner holds no claim of it yet")
	}
	volume.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: r.Status.LayerCacheClaim}
	return volume, nil
}

// layerCacheContainers empty the layer cache before the daemon starts when more of the claim
// is in use than the pool allows. dockerd bounds its BuildKit cache (builder.gc) but neither
// images nor leftover containers, and only an idle daemon's storage can be emptied safely: no
// daemon runs on the claim here, since the pod has it alone and its daemon starts after this.
// A full reset is Atlassian's remedy for a runner host's disk (a periodic
// `docker system prune -af`), taken when the disk needs it rather than by the calendar.
func layerCacheContainers(docker v1alpha1.DockerSpec) []corev1.Container {
	if docker.LayerCache == nil {
		return nil
	}
	limit := docker.LayerCache.PruneAbovePercent
	if limit == 0 {
		limit = DefaultPruneAbovePercent
	}
	// df reports the claim's file system: on a volume that shares a disk with other data
	// (hostPath, local volumes) that disk's use counts, which pruneAbovePercent must allow for.
	// Only sh, df, tail, tr and rm: docker:dind has busybox, a Debian-built daemon image coreutils.
	script := fmt.Sprintf(`set -eu
set -- $(df -P %[1]s | tail -n 1)
used=$(echo "$5" | tr -d %%)
echo "layer cache: ${used}%% of the claim in use, emptied above %[2]d%%"
if [ "$used" -gt %[2]d ]; then
  rm -rf %[1]s/* %[1]s/.[!.]* %[1]s/..?*
  echo "layer cache emptied"
fi
`, dockerStoragePath, limit)
	return []corev1.Container{{
		Name:    LayerCachePruneContainerName,
		Image:   docker.Image,
		Command: []string{"sh", "-c", script},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: pruneCPU.DeepCopy(), corev1.ResourceMemory: pruneMemory.DeepCopy()},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: pruneMemory.DeepCopy()},
		},
		VolumeMounts:             []corev1.VolumeMount{{Name: dockerStorageVolumeName, MountPath: dockerStoragePath}},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		// Root, to remove what an earlier daemon wrote (a rootless daemon's files belong to its
		// subordinate ids), with only the capabilities that takes: not privileged.
		SecurityContext: &corev1.SecurityContext{
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			RunAsUser:                ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			Capabilities: &corev1.Capabilities{
				Drop: []corev1.Capability{"ALL"},
				Add:  []corev1.Capability{"DAC_OVERRIDE", "FOWNER"},
			},
		},
	}}
}
