package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RunnerSpec is fixed when the pool creates the Runner; only Drain changes afterwards.
type RunnerSpec struct {
	// Workspace is the Bitbucket workspace UUID the runner is registered in.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="workspace is immutable"
	Workspace BitbucketUUID `json:"workspace"`

	// Repository is set for repository runners.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="repository is immutable"
	Repository BitbucketUUID `json:"repository,omitempty"`

	// BitbucketName is the runner's name in Bitbucket. It is unique and derived from the pool's
	// UID and this object's name, so the operator finds its runner again after a crash.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=200
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="bitbucketName is immutable"
	BitbucketName string `json:"bitbucketName"`

	// Labels are all the runner's labels in Bitbucket, system labels included.
	// +required
	// +kubebuilder:validation:MaxItems=13
	// +listType=set
	Labels []RunnerLabel `json:"labels"`

	// Drain asks the runner to stop taking steps so that it can be removed once idle. The pool
	// sets it and may clear it again while the runner is still registered.
	// +optional
	Drain bool `json:"drain,omitempty"`
}

// RunnerPhase summarises where a runner is in its life.
// +kubebuilder:validation:Enum=Registering;Starting;Idle;Busy;Draining;Offline;Failed;Deleting
type RunnerPhase string

const (
	// RunnerPhaseRegistering: the Bitbucket runner or its Secret does not exist yet.
	RunnerPhaseRegistering RunnerPhase = "Registering"
	// RunnerPhaseStarting: registered, the pod is not running or the agent has not connected.
	RunnerPhaseStarting RunnerPhase = "Starting"
	// RunnerPhaseIdle: ONLINE without a step.
	RunnerPhaseIdle RunnerPhase = "Idle"
	// RunnerPhaseBusy: running a step.
	RunnerPhaseBusy RunnerPhase = "Busy"
	// RunnerPhaseDraining: DISABLED in Bitbucket, waiting to be idle before removal.
	RunnerPhaseDraining RunnerPhase = "Draining"
	// RunnerPhaseOffline: was ONLINE, the agent is gone.
	RunnerPhaseOffline RunnerPhase = "Offline"
	// RunnerPhaseFailed: the runner cannot start (see the conditions).
	RunnerPhaseFailed RunnerPhase = "Failed"
	// RunnerPhaseDeleting: being unregistered.
	RunnerPhaseDeleting RunnerPhase = "Deleting"
)

// RunnerStatus mirrors the Bitbucket runner and its pod.
type RunnerStatus struct {
	// ObservedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// UUID is the Bitbucket runner UUID, once registered.
	// +optional
	UUID string `json:"uuid,omitempty"`
	// Phase summarises the runner's state.
	// +optional
	Phase RunnerPhase `json:"phase,omitempty"`
	// BitbucketState is the runner's state.status in Bitbucket (UNREGISTERED, ONLINE, OFFLINE,
	// DISABLED, ...).
	// +optional
	BitbucketState string `json:"bitbucketState,omitempty"`
	// Step is the UUID of the step the runner is running, if any.
	// +optional
	Step string `json:"step,omitempty"`
	// StepsStarted counts the distinct steps this runner's current pod has been seen running.
	// +optional
	StepsStarted int32 `json:"stepsStarted,omitempty"`
	// PodName is the runner pod.
	// +optional
	PodName string `json:"podName,omitempty"`
	// LayerCacheClaim is the PersistentVolumeClaim holding this runner's docker storage, when
	// the pool keeps a layer cache. The claim's ci.runnerpool.dev/runner label says the same.
	// +optional
	LayerCacheClaim string `json:"layerCacheClaim,omitempty"`
	// SecretName is the Secret holding the runner's OAuth client credentials.
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// RegisteredTime is when the runner was registered in Bitbucket.
	// +optional
	RegisteredTime *metav1.Time `json:"registeredTime,omitempty"`
	// OnlineTime is when the runner was first seen ONLINE with its current pod.
	// +optional
	OnlineTime *metav1.Time `json:"onlineTime,omitempty"`
	// LastStepTime is when a step was last seen to start or to end (the first observation
	// without it): the scale-down delay counts from there.
	// +optional
	LastStepTime *metav1.Time `json:"lastStepTime,omitempty"`
	// DisabledTime is when the runner was set DISABLED for draining.
	// +optional
	DisabledTime *metav1.Time `json:"disabledTime,omitempty"`
	// PodTemplateHash is the template hash of the current pod; a pool whose pods now hash
	// differently recycles this runner once idle.
	// +optional
	PodTemplateHash string `json:"podTemplateHash,omitempty"`
	// PodStartTime is when the current pod was created, for maxAge.
	// +optional
	PodStartTime *metav1.Time `json:"podStartTime,omitempty"`
	// PodRestarts counts the pods created in a row to replace one that ended, or was deleted,
	// before the runner came ONLINE or took a step (a crash at start, a bad image, an OOM). Each
	// such pod waits longer than the last, from 10 s doubling to 10 minutes, so a pod that cannot
	// start is not recreated in a loop. Cleared once the runner comes ONLINE.
	// +optional
	PodRestarts int32 `json:"podRestarts,omitempty"`
	// NextPodTime is the earliest the next of those pods is created.
	// +optional
	NextPodTime *metav1.Time `json:"nextPodTime,omitempty"`
	// LastObservedTime is the observation that last changed the Bitbucket state above. An
	// unchanged state is not written again at every poll; the pool's lastObservedTime is when
	// Bitbucket was last read.
	// +optional
	LastObservedTime *metav1.Time `json:"lastObservedTime,omitempty"`
	// Conditions: Registered, PodReady, Online.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Runner is one Bitbucket runner and its pod. The pool creates and deletes Runners; it is the
// record of what exists in Bitbucket, so a restart never loses track of a runner.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rnr,categories=runnerpool-operator
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.metadata.labels.ci\.runnerpool\.dev/pool`
// +kubebuilder:printcolumn:name="UUID",type=string,JSONPath=`.status.uuid`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.bitbucketState`
// +kubebuilder:printcolumn:name="Step",type=string,JSONPath=`.status.step`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Runner struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec RunnerSpec `json:"spec"`
	// +optional
	Status RunnerStatus `json:"status,omitempty"`

	// decodeError is why the object could not be read whole (see DecodeError). It is never
	// serialised, and controller-gen leaves it out of the schema.
	decodeError string `json:"-"`
}

// RunnerList is a list of Runners.
// +kubebuilder:object:root=true
type RunnerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Runner `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Runner{}, &RunnerList{})
}
