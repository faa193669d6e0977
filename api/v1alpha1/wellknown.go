package v1alpha1

import "k8s.io/apimachinery/pkg/api/resource"

// Names shared by the controllers, the pod builder and the tests.
const (
	// LabelPool is set on Runners, their pods and Secrets: the owning RunnerPool's name.
	LabelPool = "ci.runnerpool.dev/pool"
	// LabelRunner is set on runner pods and Secrets: the owning Runner's name.
	LabelRunner = "ci.runnerpool.dev/runner"
	// AnnotationRunnerUUID on a runner Secret records which Bitbucket runner its credentials
	// belong to, so a Secret written before a crash is matched to the right runner.
	AnnotationRunnerUUID = "ci.runnerpool.dev/runner-uuid"

	// AnnotationPollRequested on a RunnerPool asks for an observation of Bitbucket newer than
	// its RFC 3339 time. The webhook receiver sets it; `kubectl annotate` can too.
	AnnotationPollRequested = "ci.runnerpool.dev/poll-requested"
	// AnnotationDrainCancelled on a Runner is the RFC 3339 time the pool last cancelled its
	// drain: the runner was needed again then, so its scale-down delay starts over.
	AnnotationDrainCancelled = "ci.runnerpool.dev/drain-cancelled"
	// AnnotationReplaceBackoff on a RunnerPool is "<failures>/<RFC 3339 time>": how many runners
	// that failed to start were replaced in a row, and when the next may be. The pool writes
	// it, so a restarted operator keeps the backoff (scaling.ReplaceBackoff).
	AnnotationReplaceBackoff = "ci.runnerpool.dev/replace-backoff"

	// LabelBusy is set to "true" on a runner pod while its runner runs a step. The pool's
	// PodDisruptionBudget selects the pods with it, so the Eviction API refuses to evict a pod
	// in the middle of a step.
	LabelBusy = "ci.runnerpool.dev/busy"
	// AnnotationSafeToEvict and AnnotationDoNotDisrupt are the cluster-autoscaler's and
	// Karpenter's markers: a busy runner pod carries them, with the values below, so neither
	// removes its node while it runs a step.
	AnnotationSafeToEvict  = "cluster-autoscaler.kubernetes.io/safe-to-evict"
	AnnotationDoNotDisrupt = "karpenter.sh/do-not-disrupt"

	// PoolFinalizer drains and removes a pool's runners before the pool goes.
	PoolFinalizer = "ci.runnerpool.dev/pool"
	// RunnerFinalizer unregisters the Bitbucket runner before the Runner goes.
	RunnerFinalizer = "ci.runnerpool.dev/unregister"

	// SecretKeyClientID and SecretKeyClientSecret hold an OAuth consumer in the credentials
	// Secret, and the runner's own OAuth client in a runner Secret.
	SecretKeyClientID     = "clientId"
	SecretKeyClientSecret = "clientSecret"
	// SecretKeyAccessToken holds a workspace or repository access token.
	SecretKeyAccessToken = "accessToken"
	// SecretKeyUsername and SecretKeyPassword hold a user with an app password or API token.
	SecretKeyUsername = "username"
	SecretKeyPassword = "password"

	// LabelSelfHosted and the OS labels are the system labels Bitbucket gives Linux Docker
	// runners (support.atlassian.com, "Adding a new runner"). The arm64 label is reported both
	// as linux.arm64 and linux.arm, hence spec.platformLabels.
	LabelSelfHosted = "self.hosted"
	LabelLinux      = "linux"
	LabelLinuxARM64 = "linux.arm64"

	// MaxRunnersPerScope is Bitbucket's limit of runners per workspace or repository.
	MaxRunnersPerScope = 100

	// DefaultRunnerImage is Atlassian's Linux Docker runner image.
	DefaultRunnerImage = "docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1"
)

// MinRunnerMemory is the memory the runner container needs (Bitbucket runner docs: "allocate at
// least 512 MB to the runner container").
var MinRunnerMemory = resource.MustParse("512Mi")

// StepMemory is the memory a step of each size gets for its build and service containers:
// 4096 MB for 1x, 8192 MB for 2x, and 16/32 GB for the 4x/8x sizes of self-hosted runners.
var StepMemory = map[StepSize]resource.Quantity{
	"1x": resource.MustParse("4Gi"),
	"2x": resource.MustParse("8Gi"),
	"4x": resource.MustParse("16Gi"),
	"8x": resource.MustParse("32Gi"),
}

// Condition types and reasons.
const (
	ConditionReady            = "Ready"
	ConditionCredentialsValid = "CredentialsValid"
	ConditionScalingActive    = "ScalingActive"
	// ConditionQueueRead says whether the steps waiting for the pool could be read.
	ConditionQueueRead = "QueueRead"

	// ConditionScheduled says which schedule window is in force, or why none can be.
	ConditionScheduled = "Scheduled"

	ConditionRegistered = "Registered"
	// ConditionRetiring on a Runner says the runner takes no further step: an ephemeral
	// runner that took its step, or one whose node is being drained. It was disabled in
	// Bitbucket at once, and goes when its step ends.
	ConditionRetiring = "Retiring"
	ConditionPodReady = "PodReady"
	ConditionOnline   = "Online"
)
