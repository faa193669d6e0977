package runnerpod

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// Volumes the pod always has. The runner and docker-in-docker share the docker socket through
// docker-run and the build containers' logs through docker-containers (the runner reads a
// step's log from there).
const (
	workVolumeName             = "work"
	dockerRunVolumeName        = "docker-run"
	dockerContainersVolumeName = "docker-containers"
	dockerStorageVolumeName    = "docker-storage"

	dockerRunPath        = "/var/run"
	dockerStoragePath    = "/var/lib/docker"
	dockerContainersPath = "/var/lib/docker/containers"
	dockerSocketURL      = "unix:///var/run/docker.sock"
)

// Rootless docker-in-docker (docker:dind-rootless) runs dockerd as user 1000 inside a user
// namespace set up by rootlesskit. rootlesskit lays a private copy of /run over /run
// (--copy-up=/run), so a socket created directly in /run would stay invisible to the runner:
// the daemon listens in its runtime directory instead, where the shared socket volume is
// mounted, and the runner still finds the socket at /var/run/docker.sock.
const (
	rootlessUID        int64 = 1000
	rootlessRuntimeDir       = "/run/user/1000"
	rootlessSocketURL        = "unix:///run/user/1000/docker.sock"

	// VolumeOwnerContainerName is the init container that hands the daemon's volumes to the
	// rootless user before the daemon starts.
	VolumeOwnerContainerName = "docker-volumes"
)

var (
	volumeOwnerCPU    = resource.MustParse("10m")
	volumeOwnerMemory = resource.MustParse("32Mi")
)

// Node labels every runner pod is pinned by: runner images are Linux images built per
// architecture.
const (
	nodeLabelOS   = "kubernetes.io/os"
	nodeLabelArch = "kubernetes.io/arch"
)

const defaultTerminationGracePeriodSeconds int64 = 30

var (
	defaultRunnerCPURequest = resource.MustParse("250m")
	defaultDockerCPURequest = resource.MustParse("1")
)

// Docker startup probe: checked every 2s for up to 5 minutes (the default pending timeout of a
// pool), then the kubelet restarts the sidecar.
const (
	dockerProbePeriodSeconds    = 2
	dockerProbeTimeoutSeconds   = 5
	dockerProbeFailureThreshold = 150
)

// BuildPod returns the pod of runner r of pool, registered in Bitbucket as uuid. The caller sets
// the owner reference. It returns an error when the pool asks for a pod that cannot work: the
// message names the offending field so it can be shown to the user as is.
func BuildPod(pool *v1alpha1.RunnerPool, r *v1alpha1.Runner, uuid string) (*corev1.Pod, error) {
	if pool == nil || r == nil {
		return nil, errors.New("build runner pod: pool and runner are required")
	}
	pod, err := buildPod(pool, r, uuid)
	if err != nil {
		return nil, fmt.Errorf("build pod for runner %s/%s: %w", r.Namespace, r.Name, err)
	}
	pod.Annotations[AnnotationTemplateHash] = TemplateHash(pool)
	return pod, nil
}

func buildPod(pool *v1alpha1.RunnerPool, r *v1alpha1.Runner, uuid string) (*corev1.Pod, error) {
	if err := checkIdentity(pool, r, uuid); err != nil {
		return nil, err
	}
	workspace, repository, err := scopeOf(pool, r)
	if err != nil {
		return nil, err
	}
	in := inputsOf(pool)
	overlay, err := liftTemplateSpec(&in)
	if err != nil {
		return nil, err
	}
	workDir := in.Runner.WorkingDirectory
	if err := checkWorkingDirectory(workDir); err != nil {
		return nil, err
	}
	nodeSelector, err := buildNodeSelector(in.Platform, in.Template.NodeSelector)
	if err != nil {
		return nil, err
	}
	stepMemory, ok := v1alpha1.StepMemory[in.Runner.StepSize]
	if !ok {
		return nil, fmt.Errorf("spec.runner.stepSize %q is not one of 1x, 2x, 4x, 8x", in.Runner.StepSize)
	}
	if err := checkDockerMode(in.Docker, in.Template.RuntimeClassName); err != nil {
		return nil, err
	}
	runnerResources, err := buildRunnerResources(in.Runner.Memory, in.Runner.Resources)
	if err != nil {
		return nil, err
	}
	dockerResources, err := buildDockerResources(in.Docker.Resources, stepMemory)
	if err != nil {
		return nil, err
	}
	workVolume, err := buildWorkVolume(in.Runner.WorkVolume)
	if err != nil {
		return nil, err
	}
	storageVolume, err := dockerStorageVolume(in.Docker.LayerCache, r)
	if err != nil {
		return nil, err
	}
	settings, err := buildDaemonSettings(in.Docker, in.Runner.Images)
	if err != nil {
		return nil, err
	}
	volumes, err := buildVolumes(workVolume, storageVolume, settings.volumes, in.Template.Volumes)
	if err != nil {
		return nil, err
	}
	runnerMounts, err := buildRunnerMounts(workDir, settings.runnerMounts, in.Template.VolumeMounts, volumes)
	if err != nil {
		return nil, err
	}
	env, err := buildRunnerEnv(r, workspace, repository, uuid, workDir, settings.runnerEnv, in.Runner.Env)
	if err != nil {
		return nil, err
	}
	initContainers, err := dockerContainers(in.Docker, workDir, dockerResources, settings, volumes)
	if err != nil {
		return nil, err
	}

	gracePeriod := defaultTerminationGracePeriodSeconds
	if in.Template.TerminationGracePeriodSeconds != nil {
		gracePeriod = *in.Template.TerminationGracePeriodSeconds
	}
	noToken, noServiceLinks := false, false

	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        PodName(r),
			Namespace:   r.Namespace,
			Labels:      podLabels(pool, r, in.Template.Metadata.Labels),
			Annotations: podAnnotations(uuid, in.Template.Metadata.Annotations),
		},
		Spec: corev1.PodSpec{
			// A pod that ends is replaced by a new one with fresh docker storage; restarting the
			// runner in place could run one runner identity twice and keeps a used docker.
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &gracePeriod,
			AutomountServiceAccountToken:  &noToken,
			EnableServiceLinks:            &noServiceLinks,
			ServiceAccountName:            in.Template.ServiceAccountName,
			NodeSelector:                  nodeSelector,
			Tolerations:                   in.Template.Tolerations,
			Affinity:                      in.Template.Affinity,
			ImagePullSecrets:              in.Template.ImagePullSecrets,
			PriorityClassName:             in.Template.PriorityClassName,
			RuntimeClassName:              in.Template.RuntimeClassName,
			InitContainers:                append(layerCacheContainers(in.Docker), initContainers...),
			Containers: []corev1.Container{{
				Name:                     RunnerContainerName,
				Image:                    in.Runner.Image,
				ImagePullPolicy:          in.Runner.ImagePullPolicy,
				Env:                      env,
				Resources:                runnerResources,
				VolumeMounts:             runnerMounts,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				SecurityContext:          runnerSecurityContext(),
			}},
			Volumes: volumes,
		},
	}
	if err := mergeTemplateSpec(&pod.Spec, overlay); err != nil {
		return nil, err
	}
	return pod, nil
}

// runnerCapabilities are the only capabilities the runner container keeps. The agent runs as
// root in its image and talks to docker-in-docker over a unix socket, which needs none. What it
// does need is to manage the working directory it shares with the build containers: it writes
// each step's files there and removes them after the step, and build containers leave files
// owned by their own users (any uid a build image runs as, subordinate ids in Rootless mode), so
// root needs CAP_DAC_OVERRIDE and CAP_FOWNER to read, replace and delete them and CAP_CHOWN to
// hand files to a build's user. The rest of the runtime's default set (NET_RAW, SETUID, SETGID,
// KILL, MKNOD, SYS_CHROOT, SETPCAP, SETFCAP, FSETID, NET_BIND_SERVICE, AUDIT_WRITE) is dropped:
// the agent opens no raw sockets, switches no users and binds no ports.
var runnerCapabilities = []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER"}

// runnerSecurityContext is the runner container's: never privileged, no privilege escalation
// (no setuid binary can raise it), the runtime's default seccomp profile, and only the
// capabilities of runnerCapabilities. docker-in-docker is a separate container, so none of this
// constrains the builds.
func runnerSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		Privileged:               ptr(false),
		AllowPrivilegeEscalation: ptr(false),
		Capabilities: &corev1.Capabilities{
			Drop: []corev1.Capability{"ALL"},
			Add:  slices.Clone(runnerCapabilities),
		},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// checkDockerMode refuses a mode the daemon cannot start in.
func checkDockerMode(docker v1alpha1.DockerSpec, runtimeClassName *string) error {
	switch docker.Mode {
	case v1alpha1.DockerModePrivileged:
	case v1alpha1.DockerModeRootless:
		// The CRD defaulted the image to docker:dind before the mode existed, so a pool
		// switched to Rootless may still name it; that image has no rootlesskit.
		if docker.Image == defaultDockerImage || docker.Image == "docker.io/library/"+defaultDockerImage {
			return fmt.Errorf("spec.docker.image %s cannot run rootless: remove spec.docker.image to use %s, or name another rootless image",
				docker.Image, defaultRootlessDockerImage)
		}
	case v1alpha1.DockerModeUnprivileged:
		if runtimeClassName == nil || *runtimeClassName == "" {
			return errors.New("spec.docker.mode Unprivileged needs spec.template.runtimeClassName: " +
				"dockerd cannot start unprivileged outside a sandboxed runtime")
		}
	default:
		return fmt.Errorf("spec.docker.mode %q is not one of Privileged, Rootless, Unprivileged", docker.Mode)
	}
	return nil
}

// dockerContainers are the pod's init containers: docker-in-docker as a native sidecar, an init
// container that keeps running. The kubelet starts it, and waits for its startup probe, before
// the runner starts, and stops it after the runner has ended, so the runner never sees a missing
// daemon. A rootless daemon first needs its volumes handed to its user.
func dockerContainers(docker v1alpha1.DockerSpec, workDir string, resources corev1.ResourceRequirements, settings daemonSettings, volumes []corev1.Volume) ([]corev1.Container, error) {
	daemon := dockerContainer(docker, workDir, resources)
	// The pool's daemon settings come after the operator's own flags, and the user's after
	// those (the CRD refuses user flags that would move the socket or the data root).
	daemon.Args = append(append(daemon.Args, settings.args...), docker.Args...)
	env, err := buildDaemonEnv(settings.env, docker.Env)
	if err != nil {
		return nil, err
	}
	daemon.Env = env
	mounts, err := buildDaemonMounts(append(daemon.VolumeMounts, settings.mounts...), docker.VolumeMounts, volumes)
	if err != nil {
		return nil, err
	}
	daemon.VolumeMounts = mounts
	if docker.Mode != v1alpha1.DockerModeRootless {
		return []corev1.Container{daemon}, nil
	}
	return []corev1.Container{volumeOwnerContainer(docker.Image), daemon}, nil
}

func dockerContainer(docker v1alpha1.DockerSpec, workDir string, resources corev1.ResourceRequirements) corev1.Container {
	// Naming dockerd keeps the image's entrypoint from adding its default TCP listener, and the
	// daemon listens only on the socket shared with the runner.
	args := []string{"dockerd", "--host=" + dockerSocketURL}
	probe := []string{"docker", "info"}
	socketDir := dockerRunPath
	security := &corev1.SecurityContext{
		// dockerd needs to create namespaces, cgroups and mounts for the build containers.
		Privileged: ptr(true),
	}
	switch docker.Mode {
	case v1alpha1.DockerModeRootless:
		// The data root stays at /var/lib/docker, so the build logs are at the same path as in
		// the runner, which reads them there.
		args = []string{"dockerd", "--host=" + rootlessSocketURL, "--data-root=" + dockerStoragePath}
		probe = []string{"docker", "--host=" + rootlessSocketURL, "info"}
		socketDir = rootlessRuntimeDir
		security = &corev1.SecurityContext{
			// Still privileged: Docker documents that rootless docker-in-docker needs it to lift
			// seccomp, AppArmor and the /proc masks, which a nested user namespace and its own
			// /proc need. What changes is who the daemon is: user 1000, and the build containers
			// are subordinate ids of a user namespace, never root on the node.
			Privileged:   ptr(true),
			RunAsUser:    ptr(rootlessUID),
			RunAsGroup:   ptr(rootlessUID),
			RunAsNonRoot: ptr(true),
		}
	case v1alpha1.DockerModeUnprivileged:
		// The sandboxed runtime of spec.template.runtimeClassName gives dockerd what it needs
		// inside the sandbox; the node never sees a privileged container.
		security = &corev1.SecurityContext{Privileged: ptr(false)}
	}
	return corev1.Container{
		Name:          DockerContainerName,
		Image:         docker.Image,
		RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways),
		Args:          args,
		// The environment (TLS off first) is buildDaemonEnv's.
		Resources: resources,
		VolumeMounts: []corev1.VolumeMount{
			// The same path as in the runner: the runner asks this daemon to bind-mount
			// paths under the working directory into the build containers.
			{Name: workVolumeName, MountPath: workDir},
			{Name: dockerRunVolumeName, MountPath: socketDir},
			{Name: dockerStorageVolumeName, MountPath: dockerStoragePath},
			{Name: dockerContainersVolumeName, MountPath: dockerContainersPath},
		},
		// `docker info` answers only once the daemon serves requests; a socket file alone could
		// be left over from a previous run of the sidecar in the same pod. There is no liveness
		// probe: a daemon slow under a heavy build must not be killed along with the build.
		StartupProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{
				Exec: &corev1.ExecAction{Command: probe},
			},
			PeriodSeconds:    dockerProbePeriodSeconds,
			TimeoutSeconds:   dockerProbeTimeoutSeconds,
			FailureThreshold: dockerProbeFailureThreshold,
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext:          security,
	}
}

// volumeOwnerContainer gives the daemon's emptyDirs to the rootless user. The kubelet creates
// them owned by root, and dockerd, root only inside its user namespace, may not chmod a data
// root it does not own. chown is all it does: root with CAP_CHOWN alone, not privileged.
func volumeOwnerContainer(image string) corev1.Container {
	owner := fmt.Sprintf("%d:%d", rootlessUID, rootlessUID)
	return corev1.Container{
		Name:    VolumeOwnerContainerName,
		Image:   image,
		Command: []string{"chown", owner, rootlessRuntimeDir, dockerStoragePath, dockerContainersPath},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: volumeOwnerCPU.DeepCopy(), corev1.ResourceMemory: volumeOwnerMemory.DeepCopy()},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: volumeOwnerMemory.DeepCopy()},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: dockerRunVolumeName, MountPath: rootlessRuntimeDir},
			{Name: dockerStorageVolumeName, MountPath: dockerStoragePath},
			{Name: dockerContainersVolumeName, MountPath: dockerContainersPath},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			RunAsUser:                ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			Capabilities: &corev1.Capabilities{
				Drop: []corev1.Capability{"ALL"},
				Add:  []corev1.Capability{"CHOWN"},
			},
		},
	}
}

// checkIdentity refuses names the API server would reject in a form the user cannot trace back
// (a label value over 63 characters, a Secret name over 253).
func checkIdentity(pool *v1alpha1.RunnerPool, r *v1alpha1.Runner, uuid string) error {
	if uuid == "" {
		return errors.New("the runner has no Bitbucket UUID yet")
	}
	if r.Namespace != pool.Namespace {
		return fmt.Errorf("runner is in namespace %q but pool %s is in %q", r.Namespace, pool.Name, pool.Namespace)
	}
	if msgs := validation.IsDNS1123Subdomain(SecretName(r)); len(msgs) > 0 {
		return fmt.Errorf("runner name %q does not make a valid Secret name: %s", r.Name, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsValidLabelValue(r.Name); len(msgs) > 0 {
		return fmt.Errorf("runner name %q is not a valid label value: %s", r.Name, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsValidLabelValue(pool.Name); len(msgs) > 0 {
		return fmt.Errorf("pool name %q is not a valid label value: %s", pool.Name, strings.Join(msgs, "; "))
	}
	return nil
}

// scopeOf returns where the runner is registered. The Runner is the record of what exists in
// Bitbucket, so its values win; the pool's fill in a Runner written without them. They can only
// disagree if the Runner does not belong to the pool.
func scopeOf(pool *v1alpha1.RunnerPool, r *v1alpha1.Runner) (workspace, repository string, err error) {
	workspace, err = pick("workspace", string(r.Spec.Workspace), string(pool.Spec.Bitbucket.Workspace))
	if err != nil {
		return "", "", err
	}
	if workspace == "" {
		return "", "", errors.New("neither the runner nor the pool names a Bitbucket workspace")
	}
	repository, err = pick("repository", string(r.Spec.Repository), string(pool.Spec.Bitbucket.Repository))
	if err != nil {
		return "", "", err
	}
	return workspace, repository, nil
}

func pick(field, fromRunner, fromPool string) (string, error) {
	switch {
	case fromRunner == "":
		return fromPool, nil
	case fromPool != "" && fromPool != fromRunner:
		return "", fmt.Errorf("runner %s %s does not match the pool's %s", field, fromRunner, fromPool)
	default:
		return fromRunner, nil
	}
}

// checkWorkingDirectory refuses working directories that would land on the docker socket or
// the daemon's storage, where the shared mounts would hide each other.
func checkWorkingDirectory(workDir string) error {
	if !path.IsAbs(workDir) || path.Clean(workDir) != workDir || workDir == "/" {
		return fmt.Errorf("spec.runner.workingDirectory %q must be a clean absolute path other than /", workDir)
	}
	for _, reserved := range []string{dockerRunPath, dockerStoragePath} {
		if workDir == reserved || isUnder(workDir, reserved) || isUnder(reserved, workDir) {
			return fmt.Errorf("spec.runner.workingDirectory %q overlaps %s, which docker-in-docker needs", workDir, reserved)
		}
	}
	return nil
}

// isUnder reports whether p is strictly inside dir; both are clean absolute paths.
func isUnder(p, dir string) bool {
	return strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// buildNodeSelector pins the pod to Linux nodes of the pool's architecture and adds the
// user's selector. The user cannot move the pod to another OS or architecture: the runner
// image and the runner's Bitbucket labels are per platform.
func buildNodeSelector(platform v1alpha1.Platform, user map[string]string) (map[string]string, error) {
	osName, arch, ok := strings.Cut(string(platform), "/")
	if !ok || osName != "linux" || (arch != "amd64" && arch != "arm64") {
		return nil, fmt.Errorf("spec.platform %q is not linux/amd64 or linux/arm64", platform)
	}
	required := map[string]string{nodeLabelOS: osName, nodeLabelArch: arch}
	selector := make(map[string]string, len(user)+len(required))
	maps.Copy(selector, user)
	for key, value := range required {
		if got, set := user[key]; set && got != value {
			return nil, fmt.Errorf("spec.template.nodeSelector sets %s=%s but spec.platform %s needs %s=%s: "+
				"change spec.platform instead, the runner's labels and image depend on it", key, got, platform, key, value)
		}
		selector[key] = value
	}
	return selector, nil
}

// buildRunnerResources applies the defaults per resource, so a user who only sets CPU still
// gets the memory the runner needs. spec.runner.memory, the field the CRD validates, wins over
// a memory in spec.runner.resources.
func buildRunnerResources(memory *resource.Quantity, user *corev1.ResourceRequirements) (corev1.ResourceRequirements, error) {
	res := copyResources(user)
	if memory != nil {
		res.Requests[corev1.ResourceMemory] = memory.DeepCopy()
		res.Limits[corev1.ResourceMemory] = memory.DeepCopy()
	} else if !setsResource(res, corev1.ResourceMemory) {
		res.Requests[corev1.ResourceMemory] = v1alpha1.MinRunnerMemory.DeepCopy()
		res.Limits[corev1.ResourceMemory] = v1alpha1.MinRunnerMemory.DeepCopy()
	}
	if !setsResource(res, corev1.ResourceCPU) {
		res.Requests[corev1.ResourceCPU] = defaultRunnerCPURequest.DeepCopy()
	}
	for _, side := range []struct {
		kind string
		list corev1.ResourceList
	}{{"request", res.Requests}, {"limit", res.Limits}} {
		if memory, set := side.list[corev1.ResourceMemory]; set && memory.Cmp(v1alpha1.MinRunnerMemory) < 0 {
			return res, fmt.Errorf("spec.runner.resources memory %s %s is below the %s the Bitbucket runner needs",
				side.kind, memory.String(), v1alpha1.MinRunnerMemory.String())
		}
	}
	if err := checkRequestsWithinLimits(res); err != nil {
		return res, fmt.Errorf("spec.runner.resources: %w", err)
	}
	return dropEmpty(res), nil
}

// buildDockerResources gives docker-in-docker the memory of the pool's step size: the build
// and service containers of a step all run inside this daemon's cgroup. Requests equal limits
// so that a step never gets less memory than Bitbucket promises for its size.
func buildDockerResources(user *corev1.ResourceRequirements, stepMemory resource.Quantity) (corev1.ResourceRequirements, error) {
	res := copyResources(user)
	if !setsResource(res, corev1.ResourceMemory) {
		res.Requests[corev1.ResourceMemory] = stepMemory.DeepCopy()
		res.Limits[corev1.ResourceMemory] = stepMemory.DeepCopy()
	}
	if !setsResource(res, corev1.ResourceCPU) {
		res.Requests[corev1.ResourceCPU] = defaultDockerCPURequest.DeepCopy()
	}
	if err := checkRequestsWithinLimits(res); err != nil {
		return res, fmt.Errorf("spec.docker.resources: %w", err)
	}
	return dropEmpty(res), nil
}

func copyResources(user *corev1.ResourceRequirements) corev1.ResourceRequirements {
	res := corev1.ResourceRequirements{}
	if user != nil {
		user.DeepCopyInto(&res)
	}
	if res.Requests == nil {
		res.Requests = corev1.ResourceList{}
	}
	if res.Limits == nil {
		res.Limits = corev1.ResourceList{}
	}
	return res
}

func setsResource(res corev1.ResourceRequirements, name corev1.ResourceName) bool {
	_, requested := res.Requests[name]
	_, limited := res.Limits[name]
	return requested || limited
}

func dropEmpty(res corev1.ResourceRequirements) corev1.ResourceRequirements {
	if len(res.Requests) == 0 {
		res.Requests = nil
	}
	if len(res.Limits) == 0 {
		res.Limits = nil
	}
	return res
}

func checkRequestsWithinLimits(res corev1.ResourceRequirements) error {
	for _, name := range slices.Sorted(maps.Keys(res.Requests)) {
		request := res.Requests[name]
		if limit, set := res.Limits[name]; set && request.Cmp(limit) > 0 {
			return fmt.Errorf("%s request %s is above its limit %s", name, request.String(), limit.String())
		}
	}
	return nil
}

func buildWorkVolume(source *v1alpha1.WorkVolumeSource) (corev1.Volume, error) {
	volume := corev1.Volume{Name: workVolumeName}
	switch {
	case source == nil || (source.EmptyDir == nil && source.Ephemeral == nil):
		volume.EmptyDir = &corev1.EmptyDirVolumeSource{}
	case source.EmptyDir != nil && source.Ephemeral != nil:
		return volume, errors.New("spec.runner.workVolume sets both emptyDir and ephemeral: choose one")
	case source.EmptyDir != nil:
		volume.EmptyDir = source.EmptyDir
	default:
		volume.Ephemeral = source.Ephemeral
	}
	return volume, nil
}

// buildVolumes returns the pod's own volumes, those of the docker settings, then the user's, in
// the user's order.
func buildVolumes(work, storage corev1.Volume, settings, user []corev1.Volume) ([]corev1.Volume, error) {
	volumes := []corev1.Volume{
		work,
		{Name: dockerRunVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: dockerContainersVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		storage,
	}
	volumes = append(volumes, settings...)
	seen := make(map[string]bool, len(volumes)+len(user))
	for _, v := range volumes {
		seen[v.Name] = true
	}
	for _, v := range user {
		switch {
		case v.Name == "":
			return nil, errors.New("spec.template.volumes has a volume without a name")
		case isOwnVolume(v.Name):
			return nil, fmt.Errorf("spec.template.volumes: volume name %q is reserved for the runner pod, choose another", v.Name)
		case seen[v.Name]:
			return nil, fmt.Errorf("spec.template.volumes: volume %q is listed twice", v.Name)
		}
		seen[v.Name] = true
		volumes = append(volumes, v)
	}
	return volumes, nil
}

func isOwnVolume(name string) bool {
	switch name {
	case workVolumeName, dockerRunVolumeName, dockerContainersVolumeName, dockerStorageVolumeName,
		daemonConfigVolumeName, registryCertsVolumeName, clientConfigVolumeName:
		return true
	}
	return false
}

// buildRunnerMounts returns the runner container's mounts: the work volume at the working
// directory, the docker socket directory, the build containers' logs read-only, then the
// user's mounts.
func buildRunnerMounts(workDir string, settings, user []corev1.VolumeMount, volumes []corev1.Volume) ([]corev1.VolumeMount, error) {
	mounts := []corev1.VolumeMount{
		{Name: workVolumeName, MountPath: workDir},
		{Name: dockerRunVolumeName, MountPath: dockerRunPath},
		{Name: dockerContainersVolumeName, MountPath: dockerContainersPath, ReadOnly: true},
	}
	mounts = append(mounts, settings...)
	volumeNames := make(map[string]bool, len(volumes))
	for _, v := range volumes {
		volumeNames[v.Name] = true
	}
	paths := map[string]bool{}
	for _, m := range user {
		mountPath := path.Clean(m.MountPath)
		switch {
		case m.MountPath == "" || !path.IsAbs(mountPath):
			return nil, fmt.Errorf("spec.template.volumeMounts: mount of volume %q needs an absolute mountPath, got %q", m.Name, m.MountPath)
		case !volumeNames[m.Name] || isOwnVolume(m.Name):
			return nil, fmt.Errorf("spec.template.volumeMounts: mount at %s refers to volume %q, which is not in spec.template.volumes", m.MountPath, m.Name)
		case mountPath == workDir || isUnder(mountPath, workDir):
			return nil, fmt.Errorf("spec.template.volumeMounts: mount at %s is inside the working directory %s, "+
				"where docker-in-docker would not see it; mount it elsewhere", m.MountPath, workDir)
		case mountPath == dockerRunPath:
			return nil, fmt.Errorf("spec.template.volumeMounts: mount at %s would hide the docker socket", m.MountPath)
		case mountPath == dockerContainersPath || isUnder(mountPath, dockerContainersPath):
			return nil, fmt.Errorf("spec.template.volumeMounts: mount at %s would hide the build containers' logs", m.MountPath)
		case mountPath == clientConfigDir || isUnder(mountPath, clientConfigDir):
			return nil, fmt.Errorf("spec.template.volumeMounts: mount at %s would hide the docker client configuration of spec.docker.pullSecretRef", m.MountPath)
		case paths[mountPath]:
			return nil, fmt.Errorf("spec.template.volumeMounts: two mounts at %s", m.MountPath)
		}
		paths[mountPath] = true
		mounts = append(mounts, m)
	}
	return mounts, nil
}

// buildRunnerEnv returns the variables the runner needs, then the user's. A user variable with
// a required name is dropped: the runner must talk to its own Bitbucket runner and daemon. A
// later user variable with the name of an earlier one replaces it, as the kubelet would.
func buildRunnerEnv(r *v1alpha1.Runner, workspace, repository, uuid, workDir string, owned []ownedEnv, user []corev1.EnvVar) ([]corev1.EnvVar, error) {
	secretName := SecretName(r)
	env := []corev1.EnvVar{{Name: EnvAccountUUID, Value: workspace}}
	if repository != "" {
		env = append(env, corev1.EnvVar{Name: EnvRepositoryUUID, Value: repository})
	}
	env = append(env,
		corev1.EnvVar{Name: EnvRunnerUUID, Value: uuid},
		corev1.EnvVar{Name: EnvOAuthClientID, ValueFrom: secretKey(secretName, v1alpha1.SecretKeyClientID)},
		corev1.EnvVar{Name: EnvOAuthClientSecret, ValueFrom: secretKey(secretName, v1alpha1.SecretKeyClientSecret)},
		corev1.EnvVar{Name: EnvWorkingDirectory, Value: workDir},
		corev1.EnvVar{Name: EnvRuntimePrerequisitesEnabled, Value: "true"},
		corev1.EnvVar{Name: EnvDockerHost, Value: dockerSocketURL},
	)
	// Variables that pool fields set (the step images, the docker client configuration) may
	// not be set in spec.runner.env as well.
	env, err := withOwnedEnv(env, owned, "spec.runner.env", user)
	if err != nil {
		return nil, err
	}
	position := map[string]int{}
	for _, v := range user {
		if v.Name == "" {
			return nil, errors.New("spec.runner.env has a variable without a name")
		}
		if isRequiredEnv(v.Name) {
			continue
		}
		if i, seen := position[v.Name]; seen {
			env[i] = v
			continue
		}
		position[v.Name] = len(env)
		env = append(env, v)
	}
	return env, nil
}

func isRequiredEnv(name string) bool {
	switch name {
	case EnvAccountUUID, EnvRepositoryUUID, EnvRunnerUUID, EnvOAuthClientID, EnvOAuthClientSecret,
		EnvWorkingDirectory, EnvRuntimePrerequisitesEnabled, EnvDockerHost:
		return true
	}
	return false
}

func secretKey(secretName, key string) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secretName},
		Key:                  key,
	}}
}

// podLabels are the user's template labels with ours on top: the controllers find pods by them.
func podLabels(pool *v1alpha1.RunnerPool, r *v1alpha1.Runner, user map[string]string) map[string]string {
	labels := maps.Clone(user)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[v1alpha1.LabelPool] = pool.Name
	labels[v1alpha1.LabelRunner] = r.Name
	// Only the operator says a runner is busy: a template label must not put idle pods under
	// the pool's PodDisruptionBudget.
	delete(labels, v1alpha1.LabelBusy)
	return labels
}

// podAnnotations are the user's template annotations with ours on top. The template hash is
// added by BuildPod, as it is computed from the rest of the pod.
func podAnnotations(uuid string, user map[string]string) map[string]string {
	annotations := maps.Clone(user)
	if annotations == nil {
		annotations = map[string]string{}
	}
	// A user annotation with the hash's name must not survive in the hash's input.
	delete(annotations, AnnotationTemplateHash)
	annotations[v1alpha1.AnnotationRunnerUUID] = uuid
	return annotations
}

func ptr[T any](v T) *T { return &v }
