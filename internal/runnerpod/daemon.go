package runnerpod

import (
	"errors"
	"fmt"
	"path"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// Where the pool's docker settings land in the pod (docs/adr/0023-docker-daemon-settings.md).
const (
	// daemon.json from a ConfigMap, given to dockerd with --config-file rather than at
	// /etc/docker/daemon.json: the rootless daemon reads its default from the user's home, and a
	// directory of our own leaves /etc/docker (and its certs.d) alone.
	daemonConfigVolumeName = "docker-daemon-config"
	daemonConfigDir        = "/etc/runnerpool/dockerd"
	daemonConfigFile       = "daemon.json"

	// Registry CA certificates, one directory per registry as dockerd expects them. The rootless
	// daemon reads them from the user's configuration directory instead.
	registryCertsVolumeName   = "docker-certs"
	registryCertsPath         = "/etc/docker/certs.d"
	rootlessRegistryCertsPath = "/home/rootless/.config/docker/certs.d"
	registryCAFile            = "ca.crt"

	// The docker client configuration (registry credentials) of the runner and of the docker
	// CLI in the sidecar, found through DOCKER_CONFIG.
	clientConfigVolumeName = "docker-client-config"
	clientConfigDir        = "/etc/runnerpool/docker-client"
	clientConfigFile       = "config.json"

	// EnvDockerConfig is the docker client's configuration directory.
	EnvDockerConfig = "DOCKER_CONFIG"
	// envDockerTLSCertDir set empty turns off the dind image's TLS setup, which only serves TCP.
	envDockerTLSCertDir = "DOCKER_TLS_CERTDIR"
)

// Step image variables of the Atlassian runner (bitbucket-api.md, "Runner container").
const (
	EnvPauseImage     = "PAUSE_IMAGE"
	EnvAuthProxyImage = "AUTH_PROXY_IMAGE"
	EnvCloneImage     = "CLONE_IMAGE"
)

// ownedEnv is a variable the operator sets because of a pool field, which the user may then not
// set again: the message names both.
type ownedEnv struct {
	corev1.EnvVar
	field string
}

// daemonSettings is what the pool's docker settings add to the pod.
type daemonSettings struct {
	args         []string
	env          []ownedEnv
	mounts       []corev1.VolumeMount
	runnerEnv    []ownedEnv
	runnerMounts []corev1.VolumeMount
	volumes      []corev1.Volume
}

// buildDaemonSettings turns spec.docker's registry, proxy, MTU, daemon.json and credential
// settings, and spec.runner.images, into daemon flags, variables, mounts and volumes.
func buildDaemonSettings(docker v1alpha1.DockerSpec, images v1alpha1.StepImages) (daemonSettings, error) {
	var s daemonSettings
	for _, mirror := range docker.RegistryMirrors {
		s.args = append(s.args, "--registry-mirror="+mirror)
	}
	for _, registry := range docker.InsecureRegistries {
		s.args = append(s.args, "--insecure-registry="+registry)
	}
	if docker.MTU != nil {
		s.args = append(s.args, "--mtu="+strconv.Itoa(int(*docker.MTU)))
	}
	if ref := docker.DaemonConfig; ref != nil {
		s.args = append(s.args, "--config-file="+path.Join(daemonConfigDir, daemonConfigFile))
		s.volumes = append(s.volumes, corev1.Volume{Name: daemonConfigVolumeName, VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name},
				Items:                []corev1.KeyToPath{{Key: ref.Key, Path: daemonConfigFile}},
			},
		}})
		s.mounts = append(s.mounts, corev1.VolumeMount{Name: daemonConfigVolumeName, MountPath: daemonConfigDir, ReadOnly: true})
	}
	if len(docker.CACertificates) > 0 {
		certs, err := registryCertsVolume(docker.CACertificates)
		if err != nil {
			return s, err
		}
		s.volumes = append(s.volumes, certs)
		s.mounts = append(s.mounts, corev1.VolumeMount{Name: registryCertsVolumeName, MountPath: certsPath(docker.Mode), ReadOnly: true})
	}
	if p := docker.Proxy; p != nil {
		// dockerd reads both spellings; the upper-case ones are what its documentation names.
		for _, v := range []struct{ name, value, field string }{
			{"HTTP_PROXY", p.HTTPProxy, "spec.docker.proxy.httpProxy"},
			{"HTTPS_PROXY", p.HTTPSProxy, "spec.docker.proxy.httpsProxy"},
			{"NO_PROXY", p.NoProxy, "spec.docker.proxy.noProxy"},
		} {
			if v.value != "" {
				s.env = append(s.env, ownedEnv{corev1.EnvVar{Name: v.name, Value: v.value}, v.field})
			}
		}
	}
	if ref := docker.PullSecretRef; ref != nil {
		s.volumes = append(s.volumes, corev1.Volume{Name: clientConfigVolumeName, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{
				SecretName: ref.Name,
				Items:      []corev1.KeyToPath{{Key: corev1.DockerConfigJsonKey, Path: clientConfigFile}},
			},
		}})
		mount := corev1.VolumeMount{Name: clientConfigVolumeName, MountPath: clientConfigDir, ReadOnly: true}
		s.mounts = append(s.mounts, mount)
		s.runnerMounts = append(s.runnerMounts, mount)
		env := ownedEnv{corev1.EnvVar{Name: EnvDockerConfig, Value: clientConfigDir}, "spec.docker.pullSecretRef"}
		s.env = append(s.env, env)
		s.runnerEnv = append(s.runnerEnv, env)
	}
	for _, v := range []struct{ name, value, field string }{
		{EnvPauseImage, images.Pause, "spec.runner.images.pause"},
		{EnvAuthProxyImage, images.AuthProxy, "spec.runner.images.authProxy"},
		{EnvCloneImage, images.Clone, "spec.runner.images.clone"},
	} {
		if v.value != "" {
			s.runnerEnv = append(s.runnerEnv, ownedEnv{corev1.EnvVar{Name: v.name, Value: v.value}, v.field})
		}
	}
	return s, nil
}

func certsPath(mode v1alpha1.DockerMode) string {
	if mode == v1alpha1.DockerModeRootless {
		return rootlessRegistryCertsPath
	}
	return registryCertsPath
}

// registryCertsVolume projects every registry's CA into <registry>/ca.crt of one volume.
func registryCertsVolume(cas []v1alpha1.RegistryCA) (corev1.Volume, error) {
	projected := &corev1.ProjectedVolumeSource{}
	seen := map[string]bool{}
	for i, ca := range cas {
		field := fmt.Sprintf("spec.docker.caCertificates[%d]", i)
		file := path.Join(ca.Registry, registryCAFile)
		switch {
		case ca.Registry == "" || path.Clean(ca.Registry) != ca.Registry || path.Base(ca.Registry) != ca.Registry || ca.Registry == "." || ca.Registry == "..":
			return corev1.Volume{}, fmt.Errorf("%s.registry %q is not a registry host", field, ca.Registry)
		case seen[ca.Registry]:
			return corev1.Volume{}, fmt.Errorf("%s: registry %s is listed twice", field, ca.Registry)
		case (ca.ConfigMapRef == nil) == (ca.SecretRef == nil):
			return corev1.Volume{}, fmt.Errorf("%s: set exactly one of configMapRef and secretRef", field)
		case ca.ConfigMapRef != nil:
			projected.Sources = append(projected.Sources, corev1.VolumeProjection{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: ca.ConfigMapRef.Name},
				Items:                []corev1.KeyToPath{{Key: ca.ConfigMapRef.Key, Path: file}},
			}})
		default:
			projected.Sources = append(projected.Sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: ca.SecretRef.Name},
				Items:                []corev1.KeyToPath{{Key: ca.SecretRef.Key, Path: file}},
			}})
		}
		seen[ca.Registry] = true
	}
	return corev1.Volume{Name: registryCertsVolumeName, VolumeSource: corev1.VolumeSource{Projected: projected}}, nil
}

// withOwnedEnv appends the operator's variables to env after refusing the user's variables of
// the same names: each owned variable comes from a pool field, and setting it twice is a clash
// the user should resolve, not one we silently decide.
func withOwnedEnv(env []corev1.EnvVar, owned []ownedEnv, userField string, user []corev1.EnvVar) ([]corev1.EnvVar, error) {
	byName := make(map[string]string, len(owned))
	for _, o := range owned {
		byName[o.Name] = o.field
		env = append(env, o.EnvVar)
	}
	for _, v := range user {
		if field, clash := byName[v.Name]; clash {
			return nil, fmt.Errorf("%s sets %s, which %s sets: keep one", userField, v.Name, field)
		}
	}
	return env, nil
}

// buildDaemonEnv is the daemon's environment: TLS off, the settings' variables, then the
// user's, which may not repeat a variable the operator sets.
func buildDaemonEnv(settings []ownedEnv, user []corev1.EnvVar) ([]corev1.EnvVar, error) {
	owned := append([]ownedEnv{{corev1.EnvVar{Name: envDockerTLSCertDir, Value: ""}, "the operator (the daemon serves only its socket)"}}, settings...)
	env, err := withOwnedEnv(nil, owned, "spec.docker.env", user)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, v := range user {
		switch {
		case v.Name == "":
			return nil, errors.New("spec.docker.env has a variable without a name")
		case seen[v.Name]:
			return nil, fmt.Errorf("spec.docker.env sets %s twice", v.Name)
		}
		seen[v.Name] = true
		env = append(env, v)
	}
	return env, nil
}

// buildDaemonMounts is the daemon's mounts: the operator's, then the user's, which must name a
// volume of the pod and must not hide one of the operator's.
func buildDaemonMounts(own []corev1.VolumeMount, user []corev1.VolumeMount, volumes []corev1.Volume) ([]corev1.VolumeMount, error) {
	volumeNames := make(map[string]bool, len(volumes))
	for _, v := range volumes {
		volumeNames[v.Name] = true
	}
	mounts := append([]corev1.VolumeMount(nil), own...)
	for _, m := range user {
		mountPath := path.Clean(m.MountPath)
		switch {
		case m.MountPath == "" || !path.IsAbs(mountPath):
			return nil, fmt.Errorf("spec.docker.volumeMounts: mount of volume %q needs an absolute mountPath, got %q", m.Name, m.MountPath)
		case !volumeNames[m.Name] || isOwnVolume(m.Name):
			return nil, fmt.Errorf("spec.docker.volumeMounts: mount at %s refers to volume %q, which is not in spec.template.volumes", m.MountPath, m.Name)
		}
		for _, o := range mounts {
			if mountPath == o.MountPath || isUnder(mountPath, o.MountPath) {
				return nil, fmt.Errorf("spec.docker.volumeMounts: mount at %s would hide %s, which the operator mounts there; mount it elsewhere", m.MountPath, o.MountPath)
			}
		}
		mounts = append(mounts, m)
	}
	return mounts, nil
}
