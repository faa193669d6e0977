package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RunnerPoolSpec is what a platform team writes: where the runners register, which labels they
// carry, how many there may be, how the pool scales, and what the runner pods look like.
// +kubebuilder:validation:XValidation:rule="self.minRunners <= self.maxRunners",message="minRunners must not be greater than maxRunners"
// +kubebuilder:validation:XValidation:rule="!has(self.schedules) || self.schedules.all(w, !has(w.minRunners) || w.minRunners <= self.maxRunners)",message="a schedule's minRunners must not be greater than maxRunners"
// +kubebuilder:validation:XValidation:rule="!has(self.docker) || !has(self.docker.mode) || self.docker.mode != 'Unprivileged' || (has(self.template) && (has(self.template.runtimeClassName) || has(self.template.spec)))",message="docker.mode Unprivileged needs template.runtimeClassName: dockerd cannot start unprivileged outside a sandboxed runtime"
type RunnerPoolSpec struct {
	// Bitbucket says where the runners are registered and with which credentials.
	// +required
	Bitbucket BitbucketSpec `json:"bitbucket"`

	// Labels are the custom runner labels a step selects with `runs-on`. The system labels
	// (`self.hosted` and the platform's OS label) are added automatically. Bitbucket allows up to
	// 10 custom labels of lowercase letters, digits and dots.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	// +listType=set
	Labels []RunnerLabel `json:"labels,omitempty"`

	// Platform is the runner's operating system and architecture. It selects the nodes
	// (kubernetes.io/arch) and the default OS label.
	// +optional
	// +kubebuilder:default="linux/amd64"
	Platform Platform `json:"platform,omitempty"`

	// PlatformLabels overrides the system labels added to every runner. Defaults to
	// `self.hosted` and `linux` on linux/amd64, `self.hosted` and `linux.arm64` on linux/arm64.
	// Set it when your Bitbucket workspace reports a different arm64 label (for example `linux.arm`).
	// +optional
	// +kubebuilder:validation:MaxItems=3
	// +listType=set
	PlatformLabels []RunnerLabel `json:"platformLabels,omitempty"`

	// MinRunners is the number of runners the pool never goes below. The default of 1 keeps one
	// runner ONLINE per label set, because Bitbucket may fail a step when no ONLINE runner
	// matches its labels. Set 0 explicitly to scale to zero.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MinRunners int32 `json:"minRunners"`

	// MaxRunners is the number of runners the pool never goes above, counting runners that are
	// still starting. Bitbucket allows at most 100 runners per workspace or repository.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxRunners int32 `json:"maxRunners"`

	// Scaling is the rule that turns the job queue into a number of runners.
	// +optional
	// +kubebuilder:default={}
	Scaling ScalingSpec `json:"scaling,omitzero"`

	// Runner configures the Bitbucket runner container.
	// +optional
	// +kubebuilder:default={}
	Runner RunnerContainerSpec `json:"runner,omitzero"`

	// Docker configures the docker-in-docker sidecar that runs the build containers.
	// +optional
	// +kubebuilder:default={}
	Docker DockerSpec `json:"docker,omitzero"`

	// Template adds scheduling and metadata settings to every runner pod. The containers,
	// volumes and environment the runner needs are always kept.
	// +optional
	Template PodTemplateOverrides `json:"template,omitzero"`

	// Schedules are time windows with their own capacity, for example more warm runners in
	// working hours. While a window is in force, its minRunners raises spec.minRunners (which
	// `kubectl scale` sets, and which stays the floor at all times) and its idleRunners replaces
	// spec.scaling.idleRunners. Where windows overlap, the first in the list wins. Outside every
	// window the spec's own values apply.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	// +listType=map
	// +listMapKey=name
	Schedules []ScheduleWindow `json:"schedules,omitempty"`
}

// Weekday is a day of the week, as its three-letter English abbreviation.
// +kubebuilder:validation:Enum=Mon;Tue;Wed;Thu;Fri;Sat;Sun
type Weekday string

// ScheduleWindow is a weekly time window with its own capacity.
// +kubebuilder:validation:XValidation:rule="self.start != self.end",message="start and end must differ (use 00:00 to 24:00 for a whole day)"
// +kubebuilder:validation:XValidation:rule="self.start != '24:00'",message="start must be before 24:00"
// +kubebuilder:validation:XValidation:rule="has(self.minRunners) || has(self.idleRunners)",message="a schedule sets minRunners, idleRunners or both"
type ScheduleWindow struct {
	// Name identifies the window in the pool's status and events.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// TimeZone is the IANA time zone the days and hours are read in, such as `Europe/Paris`;
	// defaults to UTC. Windows follow the zone's daylight saving changes: 08:00 stays 08:00 on
	// the wall clock.
	// +optional
	// +kubebuilder:default="UTC"
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$`
	TimeZone string `json:"timeZone,omitempty"`

	// Days the window starts on. Empty means every day. A window whose end is before its start
	// runs past midnight into the next day.
	// +optional
	// +kubebuilder:validation:MaxItems=7
	// +listType=set
	Days []Weekday `json:"days,omitempty"`

	// Start is the wall-clock time the window opens, `HH:MM` (00:00 to 23:59).
	// +required
	// +kubebuilder:validation:Pattern=`^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$`
	Start string `json:"start"`

	// End is the wall-clock time the window closes, `HH:MM` (00:01 to 24:00); before Start, it is
	// on the next day.
	// +required
	// +kubebuilder:validation:Pattern=`^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$`
	End string `json:"end"`

	// MinRunners is the pool's minimum while the window is in force, if above spec.minRunners.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MinRunners *int32 `json:"minRunners,omitempty"`

	// IdleRunners replaces spec.scaling.idleRunners while the window is in force.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	IdleRunners *int32 `json:"idleRunners,omitempty"`
}

// RunnerLabel is a Bitbucket runner label: lowercase letters and digits, separated by dots.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=50
// +kubebuilder:validation:Pattern=`^[a-z0-9]+(\.[a-z0-9]+)*$`
type RunnerLabel string

// BitbucketUUID is a Bitbucket UUID written with its braces, as Bitbucket shows it.
// +kubebuilder:validation:Pattern=`^\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}$`
type BitbucketUUID string

// Platform is an operating system and architecture a runner image supports.
// +kubebuilder:validation:Enum="linux/amd64";"linux/arm64"
type Platform string

const (
	PlatformLinuxAMD64 Platform = "linux/amd64"
	PlatformLinuxARM64 Platform = "linux/arm64"
)

// BitbucketSpec says where runners are registered.
// +kubebuilder:validation:XValidation:rule="has(self.repository) == has(oldSelf.repository) && (!has(self.repository) || self.repository == oldSelf.repository)",message="repository is immutable: create a new RunnerPool to move runners to another repository"
type BitbucketSpec struct {
	// Workspace is the workspace UUID with braces, for example
	// `{0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}` (Workspace settings > Runners shows it).
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="workspace is immutable: create a new RunnerPool to move runners to another workspace"
	Workspace BitbucketUUID `json:"workspace"`

	// Repository, when set, makes the runners repository runners of this repository UUID
	// (with braces) instead of workspace runners.
	// +optional
	Repository BitbucketUUID `json:"repository,omitempty"`

	// CredentialsSecretRef names a Secret in the pool's namespace holding the Bitbucket API
	// credentials: `clientId` and `clientSecret` (an OAuth consumer), or `accessToken`
	// (a workspace or repository access token), or `username` and `password` (an app password
	// or API token). The credentials need the runner:write scope, and pipeline for the Queue
	// scaling policy.
	// +required
	CredentialsSecretRef SecretReference `json:"credentialsSecretRef"`

	// APIURL is the Bitbucket API base URL. Defaults to the operator's --bitbucket-api-url
	// (https://api.bitbucket.org).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://[^\s/]+(/.*)?$`
	APIURL string `json:"apiURL,omitempty"`

	// TokenURL is the OAuth token endpoint used with an OAuth consumer. Defaults to the
	// operator's --bitbucket-token-url (https://bitbucket.org/site/oauth2/access_token).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://[^\s/]+(/.*)?$`
	TokenURL string `json:"tokenURL,omitempty"`
}

// SecretReference names a Secret in the same namespace.
type SecretReference struct {
	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// ScalingPolicy selects the rule that computes the desired number of runners.
// +kubebuilder:validation:Enum=IdleBuffer;PercentageIdle;Queue
type ScalingPolicy string

const (
	// ScalingPolicyIdleBuffer keeps busy + idleRunners runners. After a webhook announces a
	// pipeline, and whenever every runner is busy with none idle or starting, it also counts the
	// steps waiting, so a burst gets runners for all its steps at the next poll, webhooks or not.
	ScalingPolicyIdleBuffer ScalingPolicy = "IdleBuffer"
	// ScalingPolicyPercentageIdle follows the thresholds and multipliers of Atlassian's
	// runners-autoscaler, for teams migrating from it.
	ScalingPolicyPercentageIdle ScalingPolicy = "PercentageIdle"
	// ScalingPolicyQueue keeps busy + waiting steps + idleRunners runners, reading waiting steps
	// from the pipelines API at every poll, so a pool can idle at zero and still start runners
	// when a step waits (where Bitbucket queues steps without an ONLINE runner).
	ScalingPolicyQueue ScalingPolicy = "Queue"
)

// ScalingSpec is the rule that turns the job queue into a number of runners.
// +kubebuilder:validation:XValidation:rule="!has(self.policy) || self.policy != 'PercentageIdle' || has(self.percentageIdle)",message="percentageIdle settings are required when policy is PercentageIdle"
type ScalingSpec struct {
	// Policy is the scaling rule.
	// +optional
	// +kubebuilder:default=IdleBuffer
	Policy ScalingPolicy `json:"policy,omitempty"`

	// IdleRunners is how many ONLINE runners without a step the pool keeps ready
	// (IdleBuffer and Queue policies).
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	IdleRunners int32 `json:"idleRunners"`

	// PercentageIdle holds the runners-autoscaler thresholds (PercentageIdle policy).
	// +optional
	PercentageIdle *PercentageIdleSpec `json:"percentageIdle,omitempty"`

	// Repositories whose pipelines a workspace pool reads to count waiting steps (Queue
	// policy; after webhooks; IdleBuffer while every runner is busy), by UUID with braces or by
	// slug. Defaults to the pool's
	// repository, or to the first 25 repositories of the workspace. Each costs at least one
	// Bitbucket request per poll. A slug is made of letters, digits, `-`, `_` and `.`, and is
	// not `.` or `..`.
	// +optional
	// +kubebuilder:validation:MaxItems=25
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=128
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:Pattern=`^(\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}|[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*)$`
	Repositories []string `json:"repositories,omitempty"`

	// PollInterval is how often the pool observes Bitbucket. Webhook events trigger an
	// immediate poll. Between 5s and 10m.
	// +optional
	// +kubebuilder:default="15s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5s') && duration(self) <= duration('10m')",message="pollInterval must be between 5s and 10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	PollInterval metav1.Duration `json:"pollInterval,omitzero"`

	// ScaleDownDelay is the minimum time an idle runner lives before the pool may remove it.
	// Between 0s and 24h.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('24h')",message="scaleDownDelay must be between 0s and 24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	ScaleDownDelay metav1.Duration `json:"scaleDownDelay,omitzero"`

	// PendingTimeout is how long a runner may stay starting (pod Pending, runner not ONLINE)
	// before the pool reports it and stops counting on it. Between 30s and 1h.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('30s') && duration(self) <= duration('1h')",message="pendingTimeout must be between 30s and 1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	PendingTimeout metav1.Duration `json:"pendingTimeout,omitzero"`
}

// Decimal is a non-negative decimal number written as a string, such as "0.5" or "1.5".
// +kubebuilder:validation:Pattern=`^[0-9]+(\.[0-9]+)?$`
// +kubebuilder:validation:MaxLength=10
type Decimal string

// PercentageIdleSpec mirrors the runners-autoscaler `percentageRunnersIdle` strategy, with the
// same names and numbers, so its configuration can be copied over. The scale-down threshold is
// below the scale-up threshold, both between 0 and 1; the scale-up multiplier is above 1 and
// the scale-down multiplier between 0 and 1 (both exclusive), so scaling up always adds runners
// and scaling down always removes some.
// +kubebuilder:validation:XValidation:rule="!has(self.scaleUpThreshold) || !has(self.scaleDownThreshold) || double(self.scaleDownThreshold) < double(self.scaleUpThreshold)",message="scaleDownThreshold must be below scaleUpThreshold"
type PercentageIdleSpec struct {
	// ScaleUpThreshold: when the busy share of runners is above it, scale up (0 to 1).
	// +optional
	// +kubebuilder:default="0.5"
	// +kubebuilder:validation:XValidation:rule="double(self) <= 1.0",message="scaleUpThreshold must be between 0 and 1"
	ScaleUpThreshold Decimal `json:"scaleUpThreshold,omitempty"`
	// ScaleDownThreshold: when the busy share of runners is below it, scale down (0 to 1).
	// +optional
	// +kubebuilder:default="0.2"
	// +kubebuilder:validation:XValidation:rule="double(self) <= 1.0",message="scaleDownThreshold must be between 0 and 1"
	ScaleDownThreshold Decimal `json:"scaleDownThreshold,omitempty"`
	// ScaleUpMultiplier: the runner count is multiplied by it when scaling up (above 1).
	// +optional
	// +kubebuilder:default="1.5"
	// +kubebuilder:validation:XValidation:rule="double(self) > 1.0",message="scaleUpMultiplier must be greater than 1"
	ScaleUpMultiplier Decimal `json:"scaleUpMultiplier,omitempty"`
	// ScaleDownMultiplier: the runner count is multiplied by it when scaling down (between 0
	// and 1, exclusive).
	// +optional
	// +kubebuilder:default="0.5"
	// +kubebuilder:validation:XValidation:rule="double(self) > 0.0 && double(self) < 1.0",message="scaleDownMultiplier must be between 0 and 1 (exclusive)"
	ScaleDownMultiplier Decimal `json:"scaleDownMultiplier,omitempty"`
}

// StepSize is the largest Bitbucket step `size` the runner accepts; it sets the memory given to
// the docker-in-docker sidecar that runs the step's containers.
// +kubebuilder:validation:Enum="1x";"2x";"4x";"8x"
type StepSize string

// RunnerContainerSpec configures the Bitbucket runner container.
type RunnerContainerSpec struct {
	// Image is the Bitbucket Pipelines runner image.
	// +optional
	// +kubebuilder:default="docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the runner image. Atlassian updates the `:1` tag in place, so the
	// default pulls it again on every pod start.
	// +optional
	// +kubebuilder:default=Always
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// StepSize is the largest step size this pool runs: 1x (4 GiB), 2x (8 GiB), 4x (16 GiB) or
	// 8x (32 GiB) for the build and service containers.
	// +optional
	// +kubebuilder:default="1x"
	StepSize StepSize `json:"stepSize,omitempty"`

	// WorkingDirectory is where the runner keeps its builds. It is mounted at the same path in
	// the runner and in docker-in-docker, because the runner bind-mounts it into build containers.
	// An absolute path, not `/`.
	// +optional
	// +kubebuilder:default="/tmp"
	// +kubebuilder:validation:Pattern=`^/[^\s]*[^/\s]$`
	// +kubebuilder:validation:MaxLength=255
	WorkingDirectory string `json:"workingDirectory,omitempty"`

	// Images overrides the images the runner starts on docker-in-docker for every step besides
	// the step's own: its pause, auth-proxy and clone containers. Set them to copies in a private
	// registry when the cluster cannot reach Atlassian's (an air-gapped cluster); the runner
	// reads them from PAUSE_IMAGE, AUTH_PROXY_IMAGE and CLONE_IMAGE, which then cannot be set in
	// env as well.
	// +optional
	Images StepImages `json:"images,omitzero"`

	// WorkVolume backs the working directory. Defaults to an emptyDir.
	// +optional
	WorkVolume *WorkVolumeSource `json:"workVolume,omitempty"`

	// Memory of the runner container, its request and limit (the builds get theirs from
	// stepSize). At least 512Mi: Bitbucket asks to "allocate at least 512 MB to the runner
	// container".
	// +optional
	// +kubebuilder:default="512Mi"
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('512Mi')) >= 0",message="runner memory must be at least 512Mi (the Bitbucket runner needs 512 MB)"
	Memory *resource.Quantity `json:"memory,omitempty"`

	// Resources of the runner container other than memory (CPU, ephemeral storage). Defaults
	// to a CPU request of 250m. Memory set here is ignored in favour of the memory field.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// Env adds environment variables to the runner container. The variables the runner needs
	// (ACCOUNT_UUID, RUNNER_UUID, OAUTH_CLIENT_ID, ...) cannot be overridden.
	// +optional
	// +listType=map
	// +listMapKey=name
	Env []corev1.EnvVar `json:"env,omitempty"`

	// Ephemeral runners run one step each: the pod is replaced after every step.
	// +optional
	Ephemeral bool `json:"ephemeral,omitempty"`

	// MaxSteps recycles a runner pod (fresh docker storage) after this many steps, while idle.
	// 0 means no limit.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	MaxSteps int32 `json:"maxSteps,omitempty"`

	// MaxAge recycles a runner pod after this age, while idle: the Kubernetes form of the weekly
	// `docker system prune -af`. 0s means no limit; at most 8760h (a year).
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('8760h')",message="maxAge must be between 0s and 8760h"
	MaxAge metav1.Duration `json:"maxAge,omitzero"`
}

// StepImages are the images the Bitbucket runner starts for every step besides the step's own.
// Each defaults to Atlassian's (docker-hub.packages.atlassian.com/google/pause:latest,
// docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-auth-proxy:prod-stable,
// docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-dvcs-tools:prod-stable).
type StepImages struct {
	// Pause is the image of the container that holds each step's network namespace
	// (PAUSE_IMAGE).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[^\s]+$`
	Pause string `json:"pause,omitempty"`
	// AuthProxy is the image of the proxy that gives a step's containers their Bitbucket
	// credentials (AUTH_PROXY_IMAGE).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[^\s]+$`
	AuthProxy string `json:"authProxy,omitempty"`
	// Clone is the image that clones the repository for a step (CLONE_IMAGE).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[^\s]+$`
	Clone string `json:"clone,omitempty"`
}

// WorkVolumeSource backs the working directory: an emptyDir or an ephemeral volume claim.
// +kubebuilder:validation:XValidation:rule="!(has(self.emptyDir) && has(self.ephemeral))",message="set at most one of emptyDir and ephemeral"
type WorkVolumeSource struct {
	// +optional
	EmptyDir *corev1.EmptyDirVolumeSource `json:"emptyDir,omitempty"`
	// Ephemeral is a generic ephemeral volume (a PVC per pod), schemaless in the CRD and
	// checked like affinity.
	// +optional
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	Ephemeral *corev1.EphemeralVolumeSource `json:"ephemeral,omitempty"`
}

// DockerMode is how the docker-in-docker daemon runs, and so which privileges its container
// gets. docs/security.md compares the modes.
// +kubebuilder:validation:Enum=Privileged;Rootless;Unprivileged
type DockerMode string

const (
	// DockerModePrivileged runs `docker:dind` as root in a privileged container.
	DockerModePrivileged DockerMode = "Privileged"
	// DockerModeRootless runs `docker:dind-rootless` as user 1000. The container stays
	// privileged, because rootless dockerd needs seccomp, AppArmor and the /proc masks lifted,
	// but neither the daemon nor the build containers run as root on the node.
	DockerModeRootless DockerMode = "Rootless"
	// DockerModeUnprivileged runs `docker:dind` without privileges, for sandboxed runtimes
	// (spec.template.runtimeClassName) that give dockerd what it needs inside the sandbox.
	DockerModeUnprivileged DockerMode = "Unprivileged"
)

// DockerSpec configures the docker-in-docker sidecar.
type DockerSpec struct {
	// Mode is how the daemon runs. Privileged (the default) runs `docker:dind` as root in a
	// privileged container. Rootless runs `docker:dind-rootless` as user 1000: the container is
	// still privileged (rootless dockerd needs seccomp, AppArmor and the /proc masks lifted),
	// but the daemon and the build containers are not root on the node. Unprivileged drops
	// `privileged` altogether and needs spec.template.runtimeClassName: a sandboxed runtime
	// such as Sysbox that lets dockerd run unprivileged. The runner container is never
	// privileged.
	// +optional
	// +kubebuilder:default=Privileged
	Mode DockerMode `json:"mode,omitempty"`

	// Image of the docker-in-docker daemon. Defaults to `docker:dind`, or
	// `docker:dind-rootless` in Rootless mode.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// Resources of the docker-in-docker sidecar. Its memory defaults to what the step size
	// needs (4 GiB per 1x).
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// RegistryMirrors are pull-through mirrors of Docker Hub the daemon tries first
	// (dockerd --registry-mirror), as https:// or http:// URLs.
	// +optional
	// +kubebuilder:validation:MaxItems=10
	// +listType=atomic
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:items:Pattern=`^https?://[^\s/]+(/[^\s]*)?$`
	RegistryMirrors []string `json:"registryMirrors,omitempty"`

	// InsecureRegistries the daemon may reach over plain HTTP or with an unverified
	// certificate (dockerd --insecure-registry): `host`, `host:port` or a CIDR. Prefer
	// caCertificates for a registry with a private CA.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	// +listType=atomic
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[0-9]{1,3})?$`
	InsecureRegistries []string `json:"insecureRegistries,omitempty"`

	// CACertificates trusted by the daemon for one registry each, mounted at
	// /etc/docker/certs.d/<registry>/ca.crt (the user's certs.d in Rootless mode).
	// +optional
	// +kubebuilder:validation:MaxItems=20
	// +listType=map
	// +listMapKey=registry
	CACertificates []RegistryCA `json:"caCertificates,omitempty"`

	// Proxy is the HTTP(S) proxy the daemon pulls images through (HTTP_PROXY, HTTPS_PROXY and
	// NO_PROXY of the daemon; build containers are not affected).
	// +optional
	Proxy *DockerProxy `json:"proxy,omitempty"`

	// MTU of the daemon's default bridge (dockerd --mtu), for pod networks whose MTU is below
	// 1500 (overlays such as VXLAN or WireGuard): with a larger bridge MTU, builds hang or
	// fail on large downloads. Between 576 and 9216.
	// +optional
	// +kubebuilder:validation:Minimum=576
	// +kubebuilder:validation:Maximum=9216
	MTU *int32 `json:"mtu,omitempty"`

	// DaemonConfig names a ConfigMap key holding a daemon.json, given to dockerd with
	// --config-file. It must not set what the operator passes as flags (hosts, data-root, and
	// mtu, registry-mirrors or insecure-registries when set above): dockerd refuses to start
	// on such a clash, and the Runner's PodReady condition shows its message.
	// +optional
	DaemonConfig *ConfigMapKeyReference `json:"daemonConfig,omitempty"`

	// PullSecretRef names a kubernetes.io/dockerconfigjson Secret (often one of
	// template.imagePullSecrets) used as the docker client configuration of the runner and of
	// the docker CLI in the sidecar. The daemon pulls with the credentials its client sends,
	// and the runner is that client for the step's pause, auth-proxy and clone images;
	// docs/adr/0023 says what this covers.
	// +optional
	PullSecretRef *SecretReference `json:"pullSecretRef,omitempty"`

	// Args added to the daemon's command line after the operator's. The socket (--host, -H),
	// the data root (--data-root, -g), --config-file, --mtu and TLS are set by the operator.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +kubebuilder:validation:items:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.all(a, !(a.startsWith('--host') || a.startsWith('-H') || a.startsWith('--data-root') || a.startsWith('-g') || a.startsWith('--config-file') || a.startsWith('--mtu') || a.startsWith('--tls')))",message="docker.args must not set --host/-H, --data-root/-g, --config-file, --mtu or --tls*: the operator sets the socket and data root; use docker.daemonConfig and docker.mtu"
	Args []string `json:"args,omitempty"`

	// Env adds environment variables to the daemon's container. DOCKER_TLS_CERTDIR,
	// DOCKER_CONFIG and, with proxy set, the proxy variables are the operator's.
	// +optional
	// +listType=map
	// +listMapKey=name
	Env []corev1.EnvVar `json:"env,omitempty"`

	// VolumeMounts added to the daemon's container, of volumes in spec.template. Not at or
	// under the working directory, /var/run, /var/lib/docker or the paths the operator mounts
	// for daemonConfig and caCertificates.
	// +optional
	// +listType=atomic
	VolumeMounts []corev1.VolumeMount `json:"volumeMounts,omitempty"`

	// LayerCache keeps the daemon's images and build cache across runner pods: each runner gets
	// a PersistentVolumeClaim from a set the pool keeps (at most maxRunners claims, never two
	// runners on one claim) for /var/lib/docker, and the next runner reuses it after a recycle
	// or a scale-down. Without it, every pod starts with empty docker storage.
	// +optional
	LayerCache *LayerCacheSpec `json:"layerCache,omitempty"`
}

// RegistryCA is the CA certificate a registry's TLS certificate is checked against, read from a
// ConfigMap or a Secret key.
// +kubebuilder:validation:XValidation:rule="has(self.configMapRef) != has(self.secretRef)",message="set exactly one of configMapRef and secretRef"
type RegistryCA struct {
	// Registry is the registry's host, with its port if not 443, as images name it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$`
	Registry string `json:"registry"`
	// ConfigMapRef is the ConfigMap key holding the PEM certificate.
	// +optional
	ConfigMapRef *ConfigMapKeyReference `json:"configMapRef,omitempty"`
	// SecretRef is the Secret key holding the PEM certificate.
	// +optional
	SecretRef *SecretKeyReference `json:"secretRef,omitempty"`
}

// DockerProxy is the proxy the daemon reaches registries through.
type DockerProxy struct {
	// HTTPProxy is the proxy for http:// registries (HTTP_PROXY).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	HTTPProxy string `json:"httpProxy,omitempty"`
	// HTTPSProxy is the proxy for https:// registries (HTTPS_PROXY).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	HTTPSProxy string `json:"httpsProxy,omitempty"`
	// NoProxy lists the hosts, domains and CIDRs reached directly, comma-separated (NO_PROXY).
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^[^\s]*$`
	NoProxy string `json:"noProxy,omitempty"`
}

// ConfigMapKeyReference names a key of a ConfigMap in the same namespace.
type ConfigMapKeyReference struct {
	// Name of the ConfigMap.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// Key in the ConfigMap.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// SecretKeyReference names a key of a Secret in the same namespace.
type SecretKeyReference struct {
	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// Key in the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// LayerCacheSpec sizes the claims that keep docker storage across runner pods.
type LayerCacheSpec struct {
	// Size of each runner's claim, for example 50Gi. At least 1Gi.
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('1Gi')) >= 0",message="layerCache.size must be at least 1Gi"
	Size resource.Quantity `json:"size"`

	// StorageClassName of the claims. Unset uses the cluster's default storage class. A class
	// with volumeBindingMode WaitForFirstConsumer keeps each claim on the node (or zone) of its
	// first runner.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	StorageClassName *string `json:"storageClassName,omitempty"`

	// AccessModes of the claims. Defaults to ReadWriteOnce. The operator never gives one claim
	// to two runners, whatever the mode.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=3
	// +kubebuilder:validation:items:Enum=ReadWriteOnce;ReadWriteOncePod;ReadWriteMany
	AccessModes []corev1.PersistentVolumeAccessMode `json:"accessModes,omitempty"`

	// PruneAbovePercent empties a claim before its next daemon starts when more than this share
	// of its space is in use: the images, build cache and containers of earlier runners all go,
	// as with `docker system prune -af`. Between 1 and 100; 100 never empties it.
	// +optional
	// +kubebuilder:default=80
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	PruneAbovePercent int32 `json:"pruneAbovePercent,omitempty"`
}

// PodTemplateOverrides are merged into every runner pod.
type PodTemplateOverrides struct {
	// Metadata adds labels and annotations to runner pods.
	// +optional
	Metadata PodMetadata `json:"metadata,omitzero"`
	// NodeSelector is merged with the platform's kubernetes.io/os and kubernetes.io/arch,
	// which cannot be overridden.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// Tolerations of runner pods, for example to run builds on dedicated nodes.
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// Affinity of runner pods. Schemaless in the CRD to keep it small enough for a plain
	// `kubectl apply`; the API server checks it when the runner pod is created, and a rejected
	// pod shows in the Runner's PodReady condition and an event.
	// +optional
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// ImagePullSecrets for the runner and docker-in-docker images (a registry mirror).
	// +optional
	// +listType=atomic
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	// PriorityClassName of runner pods, so builds can preempt or yield to other workloads.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	PriorityClassName string `json:"priorityClassName,omitempty"`
	// RuntimeClassName runs runner pods with another container runtime, for example a
	// sandboxed one (Kata Containers, Sysbox) for teams that cannot allow privileged pods on
	// shared nodes. spec.docker.mode Unprivileged requires it.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	RuntimeClassName *string `json:"runtimeClassName,omitempty"`
	// ServiceAccountName of runner pods; its token is not mounted.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// TerminationGracePeriodSeconds of runner pods (default 30). Runners are only stopped when
	// idle, so this rarely matters.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=86400
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
	// Volumes added to the pod, for example a CA bundle; mount them with volumeMounts.
	// +optional
	// +listType=map
	// +listMapKey=name
	Volumes []corev1.Volume `json:"volumes,omitempty"`
	// VolumeMounts added to the runner container.
	// +optional
	// +listType=atomic
	VolumeMounts []corev1.VolumeMount `json:"volumeMounts,omitempty"`

	// Spec is a pod spec merged over the operator's runner pod, as in a Deployment's template:
	// pod fields it sets (securityContext, topologySpreadConstraints, dnsConfig, hostAliases,
	// ...) replace the operator's; containers named `runner` and initContainers named `docker`
	// are merged field by field into the operator's (env and volumeMounts by name and path);
	// other containers, initContainers and volumes are added. What the runner needs stays the
	// operator's, and a pool that sets it is reported with reason InvalidPodTemplate: the
	// containers' images (runner.image, docker.image), their commands and args, the runner's
	// environment variables and the mounts of the working directory, /var/run and
	// /var/lib/docker, the operator's volumes, restartPolicy, and any field also set by the
	// older fields of this template (nodeSelector, tolerations, ...). Schemaless in the CRD (a
	// full pod schema would not fit a plain `kubectl apply`); the API server checks the
	// runner pod when it is created.
	// +optional
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	Spec *corev1.PodSpec `json:"spec,omitempty"`
}

// PodMetadata is the subset of object metadata a pod template may carry. The operator's own
// labels and annotations (ci.runnerpool.dev/pool, /runner, /runner-uuid, /template-hash) are
// kept for it: the controllers find and judge pods by them.
type PodMetadata struct {
	// +optional
	// +kubebuilder:validation:XValidation:rule="!('ci.runnerpool.dev/pool' in self) && !('ci.runnerpool.dev/runner' in self)",message="template.metadata.labels must not set ci.runnerpool.dev/pool or ci.runnerpool.dev/runner: the operator sets them"
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	// +kubebuilder:validation:XValidation:rule="!('ci.runnerpool.dev/runner-uuid' in self) && !('ci.runnerpool.dev/template-hash' in self)",message="template.metadata.annotations must not set ci.runnerpool.dev/runner-uuid or ci.runnerpool.dev/template-hash: the operator sets them"
	Annotations map[string]string `json:"annotations,omitempty"`
}

// RunnerPoolStatus is what the operator observed and decided.
type RunnerPoolStatus struct {
	// ObservedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Replicas is the number of Runner objects of the pool, whatever their state.
	// +optional
	Replicas int32 `json:"replicas"`
	// Ready is the number of runners ONLINE in Bitbucket.
	// +optional
	Ready int32 `json:"ready"`
	// Idle is the number of ONLINE runners without a step.
	// +optional
	Idle int32 `json:"idle"`
	// Busy is the number of runners running a step.
	// +optional
	Busy int32 `json:"busy"`
	// Starting is the number of runners not ONLINE yet, pods Pending included.
	// +optional
	Starting int32 `json:"starting"`
	// Draining is the number of runners being removed.
	// +optional
	Draining int32 `json:"draining"`
	// Desired is the number of runners the scaling policy asked for.
	// +optional
	Desired int32 `json:"desired"`
	// Queued is the number of steps waiting for a runner of this pool, when known.
	// +optional
	Queued int32 `json:"queued"`
	// Selector selects the pool's runner pods (for the scale subresource).
	// +optional
	Selector string `json:"selector,omitempty"`
	// PollInterval is the effective poll interval: spec.scaling.pollInterval, stretched when
	// the Bitbucket request budget of the pool's credentials runs low.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	PollInterval *metav1.Duration `json:"pollInterval,omitempty"`
	// Schedule is the capacity the pool's schedules give it now, when it has schedules.
	// +optional
	Schedule *ScheduleStatus `json:"schedule,omitempty"`
	// LastObservedTime is when Bitbucket was last observed for this pool.
	// +optional
	LastObservedTime *metav1.Time `json:"lastObservedTime,omitempty"`
	// Conditions: Ready, CredentialsValid, ScalingActive.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ScheduleStatus is the schedule window in force and the capacity it gives.
type ScheduleStatus struct {
	// Active names the window in force; empty outside every window.
	// +optional
	Active string `json:"active,omitempty"`
	// MinRunners and IdleRunners are the values the pool scales with now.
	// +optional
	MinRunners int32 `json:"minRunners"`
	// +optional
	IdleRunners int32 `json:"idleRunners"`
	// NextChange is when another window (or none) comes into force next, within a week.
	// +optional
	NextChange *metav1.Time `json:"nextChange,omitempty"`
}

// RunnerPool is a pool of Bitbucket Pipelines self-hosted Docker runners that scales with the
// job queue.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.minRunners,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=rp,categories=runnerpool-operator
// +kubebuilder:printcolumn:name="Min",type=integer,JSONPath=`.spec.minRunners`
// +kubebuilder:printcolumn:name="Max",type=integer,JSONPath=`.spec.maxRunners`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.desired`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.ready`
// +kubebuilder:printcolumn:name="Busy",type=integer,JSONPath=`.status.busy`
// +kubebuilder:printcolumn:name="Idle",type=integer,JSONPath=`.status.idle`
// +kubebuilder:printcolumn:name="Schedule",type=string,JSONPath=`.status.schedule.active`,priority=1
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RunnerPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec RunnerPoolSpec `json:"spec"`
	// +optional
	Status RunnerPoolStatus `json:"status,omitempty"`

	// decodeError is why the object could not be read whole (see DecodeError). It is never
	// serialised, and controller-gen leaves it out of the schema.
	decodeError string `json:"-"`
}

// RunnerPoolList is a list of RunnerPools.
// +kubebuilder:object:root=true
type RunnerPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RunnerPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RunnerPool{}, &RunnerPoolList{})
}
