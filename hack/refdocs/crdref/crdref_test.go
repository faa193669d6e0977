package crdref

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
)

// widget is a small API type: own structs are expanded, Kubernetes types linked.
type widget struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              widgetSpec `json:"spec"`
}

type widgetSpec struct {
	Size      int32                        `json:"size"`
	Env       []corev1.EnvVar              `json:"env,omitempty"`
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	Every     metav1.Duration              `json:"every"`
	Parts     []widgetPart                 `json:"parts,omitempty"`
	Policy    corev1.PullPolicy            `json:"policy,omitempty"`
}

type widgetPart struct {
	Name string `json:"name"`
}

func (w *widget) DeepCopyObject() runtime.Object { c := *w; return &c }

const widgetCRD = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.dev
spec:
  group: example.dev
  scope: Namespaced
  names:
    kind: Widget
    plural: widgets
    shortNames: [wd]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    schema:
      openAPIV3Schema:
        description: Widget is a test object.
        type: object
        properties:
          apiVersion: {type: string, description: long generic text}
          kind: {type: string, description: long generic text}
          metadata: {type: object}
          spec:
            description: WidgetSpec is what a user writes.
            type: object
            required: [size]
            x-kubernetes-validations:
            - rule: self.size > 0 || !has(self.parts)
              message: parts need a size
            properties:
              size:
                description: |-
                  Size of the
                  widget.
                type: integer
                format: int32
                minimum: 1
                maximum: 10
                default: 3
              env:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  properties:
                    name: {type: string}
              resources:
                description: Resources of the widget.
                type: object
                properties:
                  limits: {type: object}
              every:
                description: Every is a period.
                type: string
                default: 15s
                x-kubernetes-validations:
                - rule: duration(self) >= duration('5s')
                  message: every must be at least 5s
              parts:
                type: array
                maxItems: 3
                items:
                  type: object
                  required: [name]
                  properties:
                    name:
                      description: Name of the part, a|b.
                      type: string
                      pattern: ^[a-z]+$
              policy:
                type: string
                enum: [Always, Never]
`

func renderWidget(t *testing.T) string {
	t.Helper()
	scheme := runtime.NewScheme()
	scheme.AddKnownTypeWithName(k8sschema.GroupVersionKind{Group: "example.dev", Version: "v1", Kind: "Widget"}, &widget{})
	out, err := Render([][]byte{[]byte(widgetCRD)}, Options{
		Scheme:          scheme,
		OwnPackage:      "github.com/runnerpool/runnerpool-operator/hack/refdocs/crdref",
		KubernetesMinor: "v1.37",
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestRenderRows(t *testing.T) {
	doc := renderWidget(t)
	tests := []struct {
		name, want string
	}{
		{"kind table names the API version", "| API version | `example.dev/v1` |"},
		{"top level replaces generic descriptions", "| `kind` | string | `Widget` |"},
		{"metadata links to ObjectMeta", "| `metadata` | [ObjectMeta](https://kubernetes.io/docs/reference/generated/kubernetes-api/v1.37/#objectmeta-v1-meta) |"},
		{"own object links to its section", "| `spec` | [object](#widgetspec) |"},
		{"scalar with bounds, default and joined description", "| `size` | integer (int32) | `3` | required; 1 to 10 | Size of the widget. |"},
		{"Kubernetes list type is one linked row", "| `env` | [][EnvVar](https://kubernetes.io/docs/reference/generated/kubernetes-api/v1.37/#envvar-v1-core) |  | items unique by `name` |  |"},
		{"Kubernetes object type is one linked row", "| `resources` | [ResourceRequirements](https://kubernetes.io/docs/reference/generated/kubernetes-api/v1.37/#resourcerequirements-v1-core) |"},
		{"duration keeps its CEL message", "| `every` | [duration](https://pkg.go.dev/time#ParseDuration) | `15s` | every must be at least 5s | Every is a period. |"},
		{"list of own objects links to the item section", "| `parts` | [][object](#widgetspecparts) |  | items at most 3 |"},
		{"named string type is described by its schema", "| `policy` | string |  | one of `Always`, `Never` |"},
		{"item section heading", "### Widget.spec.parts[]"},
		{"pipes are escaped in cells", "| `name` | string |  | required; pattern `^[a-z]+$` | Name of the part, a\\|b. |"},
		{"object rules are listed in the section", "Rules the API server enforces on this object:\n\n- parts need a size\n"},
		{"subresources", "| Subresources | `status` |"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(doc, tt.want) {
				t.Errorf("reference lacks\n%s\nin\n%s", tt.want, doc)
			}
		})
	}
	for _, absent := range []string{"limits", "long generic text"} {
		if strings.Contains(doc, absent) {
			t.Errorf("reference contains %q; Kubernetes types and generic descriptions must not be expanded", absent)
		}
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	first := renderWidget(t)
	for range 5 {
		if renderWidget(t) != first {
			t.Fatal("two renderings of the same CRD differ")
		}
	}
}

func TestRenderFailsForUnknownKind(t *testing.T) {
	_, err := Render([][]byte{[]byte(widgetCRD)}, Options{Scheme: runtime.NewScheme(), KubernetesMinor: "v1.37"})
	if err == nil || !strings.Contains(err.Error(), "Go type") {
		t.Fatalf("err = %v, want one about the missing Go type", err)
	}
}

func TestKubernetesMinor(t *testing.T) {
	tests := []struct {
		name, goMod, want string
		wantErr           bool
	}{
		{"require block", "module x\n\nrequire (\n\tk8s.io/api v0.37.2\n\tk8s.io/apimachinery v0.37.2\n)\n", "v1.37", false},
		{"single line", "module x\nrequire k8s.io/api v0.31.0\n", "v1.31", false},
		{"indirect comment", "require (\n\tk8s.io/api v0.30.1 // indirect\n)\n", "v1.30", false},
		{"missing", "module x\n", "", true},
		{"unexpected major", "require k8s.io/api v1.2.3\n", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := KubernetesMinor([]byte(tt.goMod))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("KubernetesMinor = %q, %v; want %q, error %t", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestAPIReferenceAnchor(t *testing.T) {
	tests := []struct {
		pkg, name, want string
		ok              bool
	}{
		{"k8s.io/api/core/v1", "EnvVar", "envvar-v1-core", true},
		{"k8s.io/api/apps/v1", "Deployment", "deployment-v1-apps", true},
		{"k8s.io/apimachinery/pkg/apis/meta/v1", "Condition", "condition-v1-meta", true},
		{"example.com/other", "Thing", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := apiReferenceAnchor(tt.pkg, tt.name)
			if got != tt.want || ok != tt.ok {
				t.Errorf("apiReferenceAnchor(%s, %s) = %q, %t; want %q, %t", tt.pkg, tt.name, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestAnchor(t *testing.T) {
	tests := map[string]string{
		"RunnerPool":                         "runnerpool",
		"RunnerPool.spec.bitbucket":          "runnerpoolspecbitbucket",
		"Widget.spec.parts[]":                "widgetspecparts",
		"RunnerPool.spec.template.metadata ": "runnerpoolspectemplatemetadata-",
	}
	for heading, want := range tests {
		if got := anchor(heading); got != want {
			t.Errorf("anchor(%q) = %q, want %q", heading, got, want)
		}
	}
}
