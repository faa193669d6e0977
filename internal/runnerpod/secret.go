package runnerpod

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// BuildSecret returns the Secret holding the OAuth client Bitbucket issued for the runner with
// the given UUID. It is immutable: a runner's credentials never change, and a re-registered
// runner gets a new Secret. The caller sets the owner reference.
func BuildSecret(r *v1alpha1.Runner, uuid, clientID, clientSecret string) *corev1.Secret {
	labels := map[string]string{v1alpha1.LabelRunner: r.Name}
	// The Runner carries its pool's name as a label; the Secret inherits it so that a pool's
	// Secrets can be listed without going through the Runners.
	if pool := r.Labels[v1alpha1.LabelPool]; pool != "" {
		labels[v1alpha1.LabelPool] = pool
	}
	immutable := true
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        SecretName(r),
			Namespace:   r.Namespace,
			Labels:      labels,
			Annotations: map[string]string{v1alpha1.AnnotationRunnerUUID: uuid},
		},
		Type:      corev1.SecretTypeOpaque,
		Immutable: &immutable,
		Data: map[string][]byte{
			v1alpha1.SecretKeyClientID:     []byte(clientID),
			v1alpha1.SecretKeyClientSecret: []byte(clientSecret),
		},
	}
}
