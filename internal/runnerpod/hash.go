package runnerpod

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// hashRunnerName and hashRunnerUUID stand in for a real runner when TemplateHash builds the
// pool's pod: the hash describes the pool, not one runner.
const (
	hashRunnerName = "template"
	hashRunnerUUID = "{00000000-0000-0000-0000-000000000000}"
)

// TemplateHash is a short, stable hash of everything in the pool spec that shapes a runner pod:
// platform, runner container, docker sidecar and template overrides. It hashes the pod the pool
// builds for a stand-in runner rather than the pool spec itself, so that defaults written out
// or left to the builder, quantities written as 1 or 1000m, and the API types' JSON tags make no
// difference, while a new operator version that builds different pods yields a new hash and its
// idle pods get recycled. Settings that only steer the controllers (scaling, maxAge, maxSteps,
// ephemeral, labels) are not in the pod and do not change it.
func TemplateHash(pool *v1alpha1.RunnerPool) string {
	var subject any
	if pod, err := buildPod(pool, standIn(pool), hashRunnerUUID); err == nil {
		subject = struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
			Spec        corev1.PodSpec    `json:"spec"`
		}{pod.Labels, pod.Annotations, pod.Spec}
	} else {
		// No pod can be built from this pool, so no pod carries this hash; it only has to change
		// when the pool changes.
		subject = struct {
			Error  string    `json:"error"`
			Inputs podInputs `json:"inputs"`
		}{err.Error(), inputsOf(pool)}
	}
	encoded, err := json.Marshal(subject)
	if err != nil {
		// Every field is a plain API type: marshalling cannot fail short of a broken build.
		panic("runnerpod: marshal template hash input: " + err.Error())
	}
	sum := sha256.Sum256(encoded)
	return hex.EncodeToString(sum[:5])
}

// standIn is the runner a pool's pod is built for when no real runner is at hand.
func standIn(pool *v1alpha1.RunnerPool) *v1alpha1.Runner {
	probe := &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Name: hashRunnerName, Namespace: pool.Namespace}}
	if pool.Spec.Docker.LayerCache != nil {
		// Turning the layer cache on or off changes the pods; which claim a runner holds does
		// not, and a real runner takes its claim just before its pod is built.
		probe.Status.LayerCacheClaim = hashRunnerName
	}
	return probe
}
