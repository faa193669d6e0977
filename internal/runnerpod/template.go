package runnerpod

import (
	"encoding/json"
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// spec.template.spec is a pod spec laid over the operator's pod
// (docs/adr/0022-pod-template-merge.md). It is applied in two steps:
//
//  1. liftTemplateSpec moves what it sets for the operator's own settings (the pod fields the
//     older template fields cover, the runner's and docker's env, mounts and resources, the
//     volumes) into the pool's inputs, where the builder checks them exactly as it checks those
//     fields, and refuses what only the operator may set (images, docker's command, the
//     restart policy, the operator's container names);
//  2. mergeTemplateSpec merges the rest over the built pod with the API's strategic merge patch,
//     the rules `kubectl patch` and a Deployment's template users know: containers and
//     initContainers by name, field by field, new ones added; other pod fields replaced.

const templateSpecField = "spec.template.spec"

// liftTemplateSpec moves the template spec's settings of the operator's own fields into in and
// returns what is left to merge, nil for nothing.
func liftTemplateSpec(in *podInputs) (*corev1.PodSpec, error) {
	spec := in.Template.Spec
	in.Template.Spec = nil
	if spec == nil {
		return nil, nil
	}
	t := &in.Template
	if spec.RestartPolicy != "" && spec.RestartPolicy != corev1.RestartPolicyNever {
		return nil, fmt.Errorf("%s.restartPolicy %s: runner pods are never restarted in place (a new pod replaces one that ends); remove it", templateSpecField, spec.RestartPolicy)
	}
	spec.RestartPolicy = ""

	// Pod fields the older template fields also set: one place each.
	type podField struct {
		name       string
		inTemplate bool
		inSpec     bool
		move       func()
	}
	for _, f := range []podField{
		{"nodeSelector", t.NodeSelector != nil, spec.NodeSelector != nil, func() { t.NodeSelector, spec.NodeSelector = spec.NodeSelector, nil }},
		{"tolerations", t.Tolerations != nil, spec.Tolerations != nil, func() { t.Tolerations, spec.Tolerations = spec.Tolerations, nil }},
		{"affinity", t.Affinity != nil, spec.Affinity != nil, func() { t.Affinity, spec.Affinity = spec.Affinity, nil }},
		{"imagePullSecrets", t.ImagePullSecrets != nil, spec.ImagePullSecrets != nil, func() { t.ImagePullSecrets, spec.ImagePullSecrets = spec.ImagePullSecrets, nil }},
		{"priorityClassName", t.PriorityClassName != "", spec.PriorityClassName != "", func() { t.PriorityClassName, spec.PriorityClassName = spec.PriorityClassName, "" }},
		{"runtimeClassName", t.RuntimeClassName != nil, spec.RuntimeClassName != nil, func() { t.RuntimeClassName, spec.RuntimeClassName = spec.RuntimeClassName, nil }},
		{"serviceAccountName", t.ServiceAccountName != "", spec.ServiceAccountName != "", func() { t.ServiceAccountName, spec.ServiceAccountName = spec.ServiceAccountName, "" }},
		{"terminationGracePeriodSeconds", t.TerminationGracePeriodSeconds != nil, spec.TerminationGracePeriodSeconds != nil, func() {
			t.TerminationGracePeriodSeconds, spec.TerminationGracePeriodSeconds = spec.TerminationGracePeriodSeconds, nil
		}},
	} {
		if !f.inSpec {
			continue
		}
		if f.inTemplate {
			return nil, fmt.Errorf("spec.template.%s and %s.%s are both set: keep one", f.name, templateSpecField, f.name)
		}
		f.move()
	}
	if spec.DeprecatedServiceAccount != "" {
		return nil, fmt.Errorf("%s.serviceAccount is deprecated and not merged: use %s.serviceAccountName", templateSpecField, templateSpecField)
	}
	// Volumes join the older field's, where the builder refuses the operator's names and
	// duplicates.
	t.Volumes = append(t.Volumes, spec.Volumes...)
	spec.Volumes = nil

	for i := range spec.Containers {
		c := &spec.Containers[i]
		field := fmt.Sprintf("%s.containers[%d]", templateSpecField, i)
		switch c.Name {
		case RunnerContainerName:
			if err := liftRunner(in, c, field); err != nil {
				return nil, err
			}
		case DockerContainerName, VolumeOwnerContainerName, LayerCachePruneContainerName:
			return nil, fmt.Errorf("%s: %s is an init container of the runner pod: set it under %s.initContainers", field, c.Name, templateSpecField)
		}
	}
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		field := fmt.Sprintf("%s.initContainers[%d]", templateSpecField, i)
		switch c.Name {
		case DockerContainerName:
			if err := liftDocker(in, c, field); err != nil {
				return nil, err
			}
		case RunnerContainerName:
			return nil, fmt.Errorf("%s: %s is the runner pod's main container: set it under %s.containers", field, c.Name, templateSpecField)
		case VolumeOwnerContainerName, LayerCachePruneContainerName:
			return nil, fmt.Errorf("%s: the name %s is reserved for the runner pod, choose another", field, c.Name)
		}
	}
	return spec, nil
}

// liftRunner moves the runner container's env, mounts and resources into the pool's inputs.
func liftRunner(in *podInputs, c *corev1.Container, field string) error {
	switch {
	case c.Image != "":
		return fmt.Errorf("%s.image: set the runner image in spec.runner.image", field)
	case c.ImagePullPolicy != "":
		return fmt.Errorf("%s.imagePullPolicy: set it in spec.runner.imagePullPolicy", field)
	case c.Resources.Limits != nil || c.Resources.Requests != nil || c.Resources.Claims != nil:
		if in.Runner.Resources != nil {
			return fmt.Errorf("spec.runner.resources and %s.resources are both set: keep one", field)
		}
		res := c.Resources
		in.Runner.Resources = &res
	}
	c.Resources = corev1.ResourceRequirements{}
	if err := joinEnv(&in.Runner.Env, c.Env, "spec.runner.env", field+".env", isRequiredEnv); err != nil {
		return err
	}
	c.Env = nil
	in.Template.VolumeMounts = append(in.Template.VolumeMounts, c.VolumeMounts...)
	c.VolumeMounts = nil
	return nil
}

// liftDocker moves docker-in-docker's env, mounts and resources into the pool's inputs. Its
// image, command, args and restart policy are the operator's: the daemon must listen where the
// runner looks and keep running beside it.
func liftDocker(in *podInputs, c *corev1.Container, field string) error {
	switch {
	case c.Image != "":
		return fmt.Errorf("%s.image: set the docker-in-docker image in spec.docker.image", field)
	case len(c.Command) > 0 || len(c.Args) > 0:
		return fmt.Errorf("%s: the daemon's command is the operator's; add flags with spec.docker.args", field)
	case c.RestartPolicy != nil:
		return fmt.Errorf("%s.restartPolicy: docker-in-docker is a native sidecar (Always); remove it", field)
	case c.Resources.Limits != nil || c.Resources.Requests != nil || c.Resources.Claims != nil:
		if in.Docker.Resources != nil {
			return fmt.Errorf("spec.docker.resources and %s.resources are both set: keep one", field)
		}
		res := c.Resources
		in.Docker.Resources = &res
	}
	c.Resources = corev1.ResourceRequirements{}
	if err := joinEnv(&in.Docker.Env, c.Env, "spec.docker.env", field+".env", func(string) bool { return false }); err != nil {
		return err
	}
	c.Env = nil
	in.Docker.VolumeMounts = append(in.Docker.VolumeMounts, c.VolumeMounts...)
	c.VolumeMounts = nil
	return nil
}

// joinEnv appends the template's variables to the pool field's, refusing names the operator
// requires and names set in both places.
func joinEnv(into *[]corev1.EnvVar, extra []corev1.EnvVar, intoField, extraField string, required func(string) bool) error {
	names := make(map[string]bool, len(*into))
	for _, v := range *into {
		names[v.Name] = true
	}
	for _, v := range extra {
		switch {
		case required(v.Name):
			return fmt.Errorf("%s sets %s, which the operator sets for the runner; remove it", extraField, v.Name)
		case names[v.Name]:
			return fmt.Errorf("%s and %s both set %s: keep one", intoField, extraField, v.Name)
		}
		names[v.Name] = true
		*into = append(*into, v)
	}
	return nil
}

// mergeTemplateSpec lays overlay over spec with the strategic merge patch of the pod API.
func mergeTemplateSpec(spec *corev1.PodSpec, overlay *corev1.PodSpec) error {
	if overlay == nil || reflect.DeepEqual(*overlay, corev1.PodSpec{}) {
		return nil
	}
	original, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("merge %s: %w", templateSpecField, err)
	}
	patch, err := overlayPatch(overlay)
	if err != nil {
		return fmt.Errorf("merge %s: %w", templateSpecField, err)
	}
	merged, err := strategicpatch.StrategicMergePatch(original, patch, corev1.PodSpec{})
	if err != nil {
		return fmt.Errorf("merge %s: %w", templateSpecField, err)
	}
	var out corev1.PodSpec
	if err := json.Unmarshal(merged, &out); err != nil {
		return fmt.Errorf("merge %s: %w", templateSpecField, err)
	}
	*spec = out
	return nil
}

// overlayPatch is the overlay as a patch. The Go types write unset lists as null (containers,
// for one), which a merge patch reads as "delete": nulls are dropped, so that only what the user
// wrote is merged.
func overlayPatch(overlay *corev1.PodSpec) ([]byte, error) {
	raw, err := json.Marshal(overlay)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	return json.Marshal(dropNulls(doc))
}

func dropNulls(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if child == nil {
				delete(v, k)
				continue
			}
			v[k] = dropNulls(child)
		}
	case []any:
		for i, child := range v {
			v[i] = dropNulls(child)
		}
	}
	return v
}

// Validate reports whether runner pods can be built from the pool, with the message BuildPod
// would give: the pool reconciler shows it on the pool before any runner is registered.
func Validate(pool *v1alpha1.RunnerPool) error {
	_, err := buildPod(pool, standIn(pool), hashRunnerUUID)
	return err
}
