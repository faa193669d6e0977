package v1alpha1_test

import (
	"bytes"
	"io"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/apimachinery/pkg/watch"
	restclientwatch "k8s.io/client-go/rest/watch"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

const goodPool = `{"apiVersion":"ci.runnerpool.dev/v1alpha1","kind":"RunnerPool",
 "metadata":{"name":"good","namespace":"a","uid":"u1"},
 "spec":{"bitbucket":{"workspace":"{w}","credentialsSecretRef":{"name":"s"}},"maxRunners":3,
  "scaling":{"pollInterval":"15s"}}}`

// badPool returns a pool named bad whose spec has the given JSON at spec.<field>.
func badPool(field, value string) string {
	return `{"apiVersion":"ci.runnerpool.dev/v1alpha1","kind":"RunnerPool",
 "metadata":{"name":"bad","namespace":"b","uid":"u2","finalizers":["ci.runnerpool.dev/pool"]},
 "spec":{"bitbucket":{"workspace":"{w}","credentialsSecretRef":{"name":"s"}},` + field + `:` + value + `},
 "status":{"replicas":2,"conditions":[{"type":"Ready","status":"True","reason":"AsExpected","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}`
}

func codecs(t *testing.T) serializer.CodecFactory {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return serializer.NewCodecFactory(scheme)
}

func TestAnUndecodablePoolKeepsItsIdentityAndSaysWhichFieldFailed(t *testing.T) {
	tests := []struct {
		name, field, value, want string
	}{
		{"duration in words", `"runner"`, `{"maxAge":"5 minutes"}`, `spec.runner.maxAge: time: unknown unit " minutes" in duration "5 minutes"`},
		{"bad quantity", `"runner"`, `{"memory":"lots"}`, `spec.runner.memory: quantities must match`},
		{"string where an object is expected", `"template"`, `{"affinity":{"nodeAffinity":"anywhere"}}`, `spec.template.affinity.nodeAffinity: json: cannot unmarshal string`},
		{"list where an object is expected", `"runner"`, `{"workVolume":{"ephemeral":{"volumeClaimTemplate":[]}}}`, `spec.runner.workVolume.ephemeral.volumeClaimTemplate: json: cannot unmarshal array`},
		{"number too large for int32", `"runner"`, `{"maxSteps":1e12}`, `spec.runner.maxSteps: json: cannot unmarshal number 1e12`},
		{"number where a string is expected", `"labels"`, `["ok",7]`, `spec.labels[1]: json: cannot unmarshal number`},
		{"map value of the wrong type", `"template"`, `{"nodeSelector":{"zone":{"a":1}}}`, `spec.template.nodeSelector["zone"]: json: cannot unmarshal object`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, _, err := codecs(t).UniversalDeserializer().Decode([]byte(badPool(tt.field, tt.value)), nil, nil)
			if err != nil {
				t.Fatalf("decode failed: %v", err)
			}
			pool := obj.(*v1alpha1.RunnerPool)
			if pool.Name != "bad" || pool.Namespace != "b" || pool.UID != "u2" || len(pool.Finalizers) != 1 {
				t.Fatalf("identity lost: %+v", pool.ObjectMeta)
			}
			if pool.Status.Replicas != 2 || len(pool.Status.Conditions) != 1 {
				t.Fatalf("readable status lost: %+v", pool.Status)
			}
			if pool.Spec.Bitbucket.Workspace != "" {
				t.Fatalf("spec of an undecodable pool should be empty, got %+v", pool.Spec)
			}
			if got := pool.DecodeError(); got == nil || !strings.HasPrefix(got.Error(), tt.want) {
				t.Fatalf("DecodeError() = %v, want it to start with %q", got, tt.want)
			}
			if got := pool.DeepCopy().DecodeError(); got == nil {
				t.Fatal("DeepCopy dropped the decode error")
			}
		})
	}
}

func TestAListWithOneUndecodablePoolDecodesEveryOther(t *testing.T) {
	list := `{"apiVersion":"ci.runnerpool.dev/v1alpha1","kind":"RunnerPoolList","metadata":{"resourceVersion":"7"},"items":[` +
		goodPool + `,` + badPool(`"scaling"`, `{"pollInterval":"5 minutes"}`) + `]}`
	obj, _, err := codecs(t).UniversalDeserializer().Decode([]byte(list), nil, nil)
	if err != nil {
		t.Fatalf("decode list: %v", err)
	}
	items := obj.(*v1alpha1.RunnerPoolList).Items
	if len(items) != 2 {
		t.Fatalf("got %d items", len(items))
	}
	if err := items[0].DecodeError(); err != nil || items[0].Spec.MaxRunners != 3 {
		t.Fatalf("good pool: err %v, spec %+v", err, items[0].Spec)
	}
	if err := items[1].DecodeError(); err == nil || !strings.Contains(err.Error(), "spec.scaling.pollInterval") {
		t.Fatalf("bad pool: DecodeError() = %v", err)
	}
}

// The informer's watch goes through client-go's watch decoder, which decodes the event's object
// with the same serializer.
func TestAWatchEventOfAnUndecodablePoolIsDelivered(t *testing.T) {
	events := `{"type":"ADDED","object":` + badPool(`"runner"`, `{"maxAge":"a day"}`) + "}\n" +
		`{"type":"ADDED","object":` + goodPool + "}\n"
	cf := codecs(t)
	info, ok := runtime.SerializerInfoForMediaType(cf.SupportedMediaTypes(), runtime.ContentTypeJSON)
	if !ok {
		t.Fatal("no JSON serializer")
	}
	frames := info.StreamSerializer.Framer.NewFrameReader(io.NopCloser(bytes.NewBufferString(events)))
	dec := restclientwatch.NewDecoder(streaming.NewDecoder(frames, info.StreamSerializer.Serializer), cf.UniversalDeserializer())
	var names []string
	for range 2 {
		typ, obj, err := dec.Decode()
		if err != nil {
			t.Fatalf("watch decode: %v", err)
		}
		if typ != watch.Added {
			t.Fatalf("event type %s", typ)
		}
		pool := obj.(*v1alpha1.RunnerPool)
		names = append(names, pool.Name)
		if (pool.Name == "bad") != (pool.DecodeError() != nil) {
			t.Fatalf("pool %s: DecodeError() = %v", pool.Name, pool.DecodeError())
		}
	}
	if strings.Join(names, ",") != "bad,good" {
		t.Fatalf("events for %v", names)
	}
}

func TestAnUndecodableRunnerKeepsItsIdentity(t *testing.T) {
	doc := `{"apiVersion":"ci.runnerpool.dev/v1alpha1","kind":"Runner","metadata":{"name":"r","namespace":"b",
 "ownerReferences":[{"apiVersion":"ci.runnerpool.dev/v1alpha1","kind":"RunnerPool","name":"p","uid":"u","controller":true}]},
 "spec":{"workspace":"{w}","bitbucketName":"n","labels":["a"]},"status":{"stepsStarted":99999999999}}`
	obj, _, err := codecs(t).UniversalDeserializer().Decode([]byte(doc), nil, nil)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	runner := obj.(*v1alpha1.Runner)
	if metav1.GetControllerOf(runner) == nil {
		t.Fatal("owner reference lost")
	}
	if err := runner.DecodeError(); err == nil || !strings.HasPrefix(err.Error(), "status.stepsStarted:") {
		t.Fatalf("DecodeError() = %v", err)
	}
}

func TestBrokenMetadataStillFailsTheDecode(t *testing.T) {
	doc := `{"apiVersion":"ci.runnerpool.dev/v1alpha1","kind":"RunnerPool","metadata":{"name":7},"spec":{}}`
	if _, _, err := codecs(t).UniversalDeserializer().Decode([]byte(doc), nil, nil); err == nil {
		t.Fatal("an object without a readable name decoded")
	}
}
