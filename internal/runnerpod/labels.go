package runnerpod

import (
	"slices"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// Labels returns every label the pool's runners carry in Bitbucket: the platform labels
// (spec.platformLabels, or self.hosted plus the platform's OS label) and spec.labels,
// deduplicated and sorted so that comparing two label sets is comparing two slices.
func Labels(pool *v1alpha1.RunnerPool) []string {
	platformLabels := pool.Spec.PlatformLabels
	if len(platformLabels) == 0 {
		platformLabels = defaultPlatformLabels(pool.Spec.Platform)
	}
	labels := make([]string, 0, len(platformLabels)+len(pool.Spec.Labels))
	for _, l := range platformLabels {
		labels = append(labels, string(l))
	}
	for _, l := range pool.Spec.Labels {
		labels = append(labels, string(l))
	}
	slices.Sort(labels)
	return slices.Compact(labels)
}

// defaultPlatformLabels are the system labels Bitbucket gives a Linux Docker runner of the
// platform. An unknown platform gets the amd64 labels: BuildPod refuses such a pool anyway.
func defaultPlatformLabels(p v1alpha1.Platform) []v1alpha1.RunnerLabel {
	if p == v1alpha1.PlatformLinuxARM64 {
		return []v1alpha1.RunnerLabel{v1alpha1.LabelSelfHosted, v1alpha1.LabelLinuxARM64}
	}
	return []v1alpha1.RunnerLabel{v1alpha1.LabelSelfHosted, v1alpha1.LabelLinux}
}

// RunnerLabels are the labels the Runner was registered with in Bitbucket, as strings.
func RunnerLabels(runner *v1alpha1.Runner) []string {
	out := make([]string, len(runner.Spec.Labels))
	for i, l := range runner.Spec.Labels {
		out[i] = string(l)
	}
	return out
}

// SortedLabels is a label set in the one order Bitbucket's and ours are compared in.
func SortedLabels(labels []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(labels)))
}
