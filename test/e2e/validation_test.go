package e2e

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// validPool is the smallest pool a user can write; each row of the table below breaks it in
// one way.
const validPool = `
apiVersion: ci.runnerpool.dev/v1alpha1
kind: RunnerPool
metadata: {name: p}
spec:
  bitbucket:
    workspace: "` + bbsim.DefaultWorkspaceUUID + `"
    credentialsSecretRef: {name: bitbucket}
`

func poolFromYAML(t *testing.T, ns, doc string, edit func(spec map[string]any)) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		t.Fatal(err)
	}
	obj.SetNamespace(ns)
	if edit != nil {
		edit(obj.Object["spec"].(map[string]any))
	}
	return obj
}

func TestInvalidPoolsAreRejectedWithAMessageThatSaysWhatToFix(t *testing.T) {
	ns := namespace(t)
	set := harness.SetField
	tests := []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"min above max", func(s map[string]any) { s["minRunners"] = int64(5); s["maxRunners"] = int64(2) }, "minRunners must not be greater than maxRunners"},
		{"max above Bitbucket's limit", set("maxRunners", int64(101)), "spec.maxRunners"},
		{"negative min", set("minRunners", int64(-1)), "spec.minRunners"},
		{"label with uppercase", set("labels", []any{"Docker"}), "spec.labels[0]"},
		{"label with a dash", set("labels", []any{"my-label"}), "spec.labels[0]"},
		{"eleven labels", set("labels", []any{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"}), "must have at most 10 items"},
		{"workspace without braces", set("bitbucket.workspace", "5b2f6c1e-8d4a-4e3b-9f21-7a6c0d9e4b10"), "spec.bitbucket.workspace"},
		{"workspace slug instead of uuid", set("bitbucket.workspace", "my-team"), "spec.bitbucket.workspace"},
		{"repository not a uuid", set("bitbucket.repository", "{app}"), "spec.bitbucket.repository"},
		{"missing credentials", func(s map[string]any) { delete(s["bitbucket"].(map[string]any), "credentialsSecretRef") }, "credentialsSecretRef: Required value"},
		{"unknown step size", set("runner.stepSize", "3x"), "spec.runner.stepSize"},
		{"runner memory below 512Mi", set("runner.memory", "256Mi"), "runner memory must be at least 512Mi"},
		{"relative working directory", set("runner.workingDirectory", "tmp/builds"), "spec.runner.workingDirectory"},
		{"working directory /", set("runner.workingDirectory", "/"), "spec.runner.workingDirectory"},
		{"poll interval too short", set("scaling.pollInterval", "1s"), "pollInterval must be between 5s and 10m"},
		{"poll interval too long", set("scaling.pollInterval", "1h"), "pollInterval must be between 5s and 10m"},
		{"scale down delay too long", set("scaling.scaleDownDelay", "48h"), "scaleDownDelay must be between 0s and 24h"},
		{"unknown policy", set("scaling.policy", "Magic"), "spec.scaling.policy"},
		{"percentage policy without its settings", set("scaling.policy", "PercentageIdle"), "percentageIdle settings are required"},
		{"unknown platform", set("platform", "windows/amd64"), "spec.platform"},
		{"two work volumes", set("runner.workVolume", map[string]any{"emptyDir": map[string]any{}, "ephemeral": map[string]any{}}), "set at most one of emptyDir and ephemeral"},
		{"wrong type", set("maxRunners", "ten"), "spec.maxRunners"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := sys.Client.Create(t.Context(), poolFromYAML(t, ns, validPool, tt.edit))
			if err == nil {
				t.Fatalf("the API server accepted the pool; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestWorkspaceAndRepositoryCannotChangeAfterCreation(t *testing.T) {
	ns := namespace(t)
	pool := poolFromYAML(t, ns, validPool, func(s map[string]any) { s["minRunners"] = int64(0) })
	pool.SetName("immutable")
	if err := sys.Client.Create(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(spec map[string]any)
		want string
	}{
		{"workspace", func(s map[string]any) {
			s["bitbucket"].(map[string]any)["workspace"] = "{00000000-0000-4000-8000-000000000000}"
		}, "workspace is immutable"},
		{"repository added", func(s map[string]any) {
			s["bitbucket"].(map[string]any)["repository"] = bbsim.DefaultRepositoryUUID
		}, "repository is immutable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			current := &unstructured.Unstructured{}
			current.SetGroupVersionKind(pool.GroupVersionKind())
			if err := sys.Client.Get(t.Context(), clientKey(pool), current); err != nil {
				t.Fatal(err)
			}
			patch := client.MergeFrom(current.DeepCopy())
			tt.edit(current.Object["spec"].(map[string]any))
			err := sys.Client.Patch(t.Context(), current, patch)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("update error %v, want one containing %q", err, tt.want)
			}
		})
	}
	deleteAndWaitGone(t, pool, 30e9)
}
