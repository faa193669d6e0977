package runnerpod

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// Defaults the CRD applies. They are applied again here so that a pool built in Go (tests, a
// pool read before the defaults existed) yields the same pod and the same hash.
const (
	defaultDockerImage         = "docker:dind"
	defaultRootlessDockerImage = "docker:dind-rootless"
	defaultWorkingDirectory    = "/tmp"
	defaultStepSize            = v1alpha1.StepSize("1x")
	defaultImagePullPolicy     = corev1.PullAlways
)

// podInputs is the part of a pool spec that shapes its pods, with the defaults filled in.
// Runner fields that only steer the controllers (ephemeral, maxSteps, maxAge) are left out.
type podInputs struct {
	Platform v1alpha1.Platform             `json:"platform"`
	Runner   runnerInputs                  `json:"runner"`
	Docker   v1alpha1.DockerSpec           `json:"docker"`
	Template v1alpha1.PodTemplateOverrides `json:"template"`
}

type runnerInputs struct {
	Image            string                       `json:"image"`
	ImagePullPolicy  corev1.PullPolicy            `json:"imagePullPolicy"`
	StepSize         v1alpha1.StepSize            `json:"stepSize"`
	WorkingDirectory string                       `json:"workingDirectory"`
	WorkVolume       *v1alpha1.WorkVolumeSource   `json:"workVolume,omitempty"`
	Memory           *resource.Quantity           `json:"memory,omitempty"`
	Resources        *corev1.ResourceRequirements `json:"resources,omitempty"`
	Env              []corev1.EnvVar              `json:"env,omitempty"`
	Images           v1alpha1.StepImages          `json:"images,omitzero"`
}

// inputsOf copies the pod-shaping part of the pool spec and fills in the defaults. The copy
// is deep, so builders may keep pieces of it in the pod without aliasing the pool.
func inputsOf(pool *v1alpha1.RunnerPool) podInputs {
	spec := pool.Spec.DeepCopy()
	in := podInputs{
		Platform: spec.Platform,
		Runner: runnerInputs{
			Image:            spec.Runner.Image,
			ImagePullPolicy:  spec.Runner.ImagePullPolicy,
			StepSize:         spec.Runner.StepSize,
			WorkingDirectory: spec.Runner.WorkingDirectory,
			WorkVolume:       spec.Runner.WorkVolume,
			Memory:           spec.Runner.Memory,
			Resources:        spec.Runner.Resources,
			Env:              spec.Runner.Env,
			Images:           spec.Runner.Images,
		},
		Docker:   spec.Docker,
		Template: spec.Template,
	}
	if in.Platform == "" {
		in.Platform = v1alpha1.PlatformLinuxAMD64
	}
	if in.Runner.Image == "" {
		in.Runner.Image = v1alpha1.DefaultRunnerImage
	}
	if in.Runner.ImagePullPolicy == "" {
		in.Runner.ImagePullPolicy = defaultImagePullPolicy
	}
	if in.Runner.StepSize == "" {
		in.Runner.StepSize = defaultStepSize
	}
	if in.Runner.WorkingDirectory == "" {
		in.Runner.WorkingDirectory = defaultWorkingDirectory
	}
	if in.Docker.Mode == "" {
		in.Docker.Mode = v1alpha1.DockerModePrivileged
	}
	if in.Docker.Image == "" {
		in.Docker.Image = defaultDockerImage
		if in.Docker.Mode == v1alpha1.DockerModeRootless {
			in.Docker.Image = defaultRootlessDockerImage
		}
	}
	return in
}
