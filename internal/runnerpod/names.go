// Package runnerpod turns a RunnerPool and one of its Runners into the runner's Pod and the
// Secret holding the runner's OAuth client. Everything here is a pure function of its input, so
// the controllers stay small and the pod shape is tested on golden files.
package runnerpod

import (
	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

const (
	// AnnotationTemplateHash on a runner pod is TemplateHash of the pool it was built from. An
	// idle pod whose hash differs from the pool's current hash is out of date and may be recycled.
	AnnotationTemplateHash = "ci.runnerpool.dev/template-hash"

	// RunnerContainerName is the container running the Bitbucket runner agent. Its exit ends the
	// pod, so the controllers read the runner's fate from this container's status.
	RunnerContainerName = "runner"
	// DockerContainerName is the docker-in-docker native sidecar that runs the build containers.
	DockerContainerName = "docker"

	// secretNameSuffix keeps the Secret name apart from the pod name, which is the Runner's.
	secretNameSuffix = "-oauth"
)

// Environment variables the runner agent reads (the official `docker run` command of a Linux
// Docker runner). The user may not override them.
const (
	EnvAccountUUID                 = "ACCOUNT_UUID"
	EnvRepositoryUUID              = "REPOSITORY_UUID"
	EnvRunnerUUID                  = "RUNNER_UUID"
	EnvOAuthClientID               = "OAUTH_CLIENT_ID"
	EnvOAuthClientSecret           = "OAUTH_CLIENT_SECRET"
	EnvWorkingDirectory            = "WORKING_DIRECTORY"
	EnvRuntimePrerequisitesEnabled = "RUNTIME_PREREQUISITES_ENABLED"
	EnvDockerHost                  = "DOCKER_HOST"
)

// PodName is the runner pod's name: the Runner's own name, so that one Runner can never have
// two pods at once (the runner identity must run in exactly one place).
func PodName(r *v1alpha1.Runner) string {
	return r.Name
}

// SecretName is the name of the Secret holding the runner's OAuth client.
func SecretName(r *v1alpha1.Runner) string {
	return r.Name + secretNameSuffix
}
