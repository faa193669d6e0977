// Package runnerpod turns a RunnerPool and one of its Runners into the runner's Pod and the
// Secret holding the runner's OAuth client. Everything here is a pure function of its input, so
// the controllers stay small and the pod shape is tested on golden files.
package runnerpod

import (
	"fmt"
	"strings"

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

// BitbucketNamePrefix is the marker every Bitbucket runner of the pool starts with: "rp-", the
// first eight characters of the pool's UID, and "-". The UID, not the pool's name, so that
// another cluster's pool of the same name never takes this pool's runners for its own.
func BitbucketNamePrefix(pool *v1alpha1.RunnerPool) string {
	uid := string(pool.UID)
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return "rp-" + uid + "-"
}

// BitbucketRunnerName is the Bitbucket name of a pool's runner: the pool's marker, then the
// Runner's name.
func BitbucketRunnerName(pool *v1alpha1.RunnerPool, runnerName string) string {
	return BitbucketNamePrefix(pool) + runnerName
}

// OutOfScope says why a Runner may not act for the pool that controls it, or returns "" when it
// may. A Runner is an object anyone allowed to write Runners in the namespace can create or edit,
// with the pool as its owner: it is trusted only to register, change and delete Bitbucket runners
// in its pool's own workspace or repository, under its pool's marker.
func OutOfScope(pool *v1alpha1.RunnerPool, r *v1alpha1.Runner) string {
	ws, repo := string(pool.Spec.Bitbucket.Workspace), string(pool.Spec.Bitbucket.Repository)
	switch {
	case !sameID(string(r.Spec.Workspace), ws):
		return fmt.Sprintf("the Runner names workspace %q, its pool %q", r.Spec.Workspace, ws)
	case !sameID(string(r.Spec.Repository), repo):
		return fmt.Sprintf("the Runner names repository %q, its pool %q", r.Spec.Repository, repo)
	case !strings.HasPrefix(r.Spec.BitbucketName, BitbucketNamePrefix(pool)):
		return fmt.Sprintf("the Runner's Bitbucket name %q does not carry its pool's marker %q", r.Spec.BitbucketName, BitbucketNamePrefix(pool))
	}
	return ""
}

// sameID compares two Bitbucket ids (UUIDs with or without braces, in any case, or slugs); two
// empty ids are the same (no repository).
func sameID(a, b string) bool {
	norm := func(s string) string { return strings.ToLower(strings.Trim(s, "{}")) }
	return norm(a) == norm(b)
}
