package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/metrics"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// edgePool is a pool that creates no runner of its own (no minimum, no idle buffer), so that the
// cases below cost nothing but their reconciles.
const edgePool = `
apiVersion: ci.runnerpool.dev/v1alpha1
kind: RunnerPool
metadata: {name: p}
spec:
  bitbucket:
    workspace: "` + bbsim.DefaultWorkspaceUUID + `"
    credentialsSecretRef: {name: bitbucket}
  minRunners: 0
  scaling: {idleRunners: 0}
`

// edgeCase is a pool at an edge of the schema: either the API server rejects it with a message
// naming the field (reject), or it accepts it and the operator reconciles it, reporting Ready
// with any reason but InvalidSpec, or with the reason given (InvalidSpec for a schemaless field
// of the wrong shape, which the schema cannot refuse; InvalidPodTemplate for a template spec
// that clashes with the operator's pod).
type edgeCase struct {
	name   string
	edit   func(spec map[string]any)
	reject string
	reason string
}

func allOf(edits ...func(map[string]any)) func(map[string]any) {
	return func(spec map[string]any) {
		for _, e := range edits {
			e(spec)
		}
	}
}

func percentageIdle(up, down, upMul, downMul any) func(map[string]any) {
	return allOf(harness.SetField("scaling.policy", "PercentageIdle"), harness.SetField("scaling.percentageIdle", map[string]any{
		"scaleUpThreshold": up, "scaleDownThreshold": down, "scaleUpMultiplier": upMul, "scaleDownMultiplier": downMul,
	}))
}

func schedule(w map[string]any) func(map[string]any) {
	w["name"] = "window"
	return harness.SetField("schedules", []any{w})
}

func withVolume(v map[string]any) func(map[string]any) {
	v["name"] = "extra"
	return harness.SetField("template.volumes", []any{v})
}

var edgeCases = []edgeCase{
	// Integers at and past their bounds.
	{name: "max runners at Bitbucket's limit", edit: harness.SetField("maxRunners", int64(100))},
	{name: "max runners at its minimum", edit: harness.SetField("maxRunners", int64(1))},
	{name: "max runners zero", edit: harness.SetField("maxRunners", int64(0)), reject: "spec.maxRunners"},
	{name: "max runners past int32", edit: harness.SetField("maxRunners", int64(1)<<31), reject: "spec.maxRunners"},
	{name: "max runners a fraction", edit: harness.SetField("maxRunners", 1.5), reject: "spec.maxRunners"},
	{name: "idle runners past the limit", edit: harness.SetField("scaling.idleRunners", int64(101)), reject: "spec.scaling.idleRunners"},
	{name: "max steps at its maximum", edit: harness.SetField("runner.maxSteps", int64(1000000))},
	{name: "max steps past int32", edit: harness.SetField("runner.maxSteps", int64(1)<<40), reject: "spec.runner.maxSteps"},
	{name: "grace period negative", edit: harness.SetField("template.terminationGracePeriodSeconds", int64(-1)), reject: "spec.template.terminationGracePeriodSeconds"},
	{name: "grace period past a day", edit: harness.SetField("template.terminationGracePeriodSeconds", int64(86401)), reject: "spec.template.terminationGracePeriodSeconds"},
	{name: "volume mode past int32 (a core/v1 field)", edit: withVolume(map[string]any{"secret": map[string]any{"secretName": "s", "defaultMode": int64(1) << 32}}), reject: "spec.template.volumes[0].secret.defaultMode"},
	{name: "volume mode in range", edit: withVolume(map[string]any{"secret": map[string]any{"secretName": "s", "defaultMode": int64(0o644)}})},
	{name: "toleration seconds past int64", edit: harness.SetField("template.tolerations", []any{map[string]any{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": float64(1e19)}}), reject: "spec.template.tolerations[0].tolerationSeconds"},

	// Enums, every value.
	{name: "platform arm64", edit: harness.SetField("platform", "linux/arm64")},
	{name: "step size 8x", edit: harness.SetField("runner.stepSize", "8x")},
	{name: "docker rootless", edit: harness.SetField("docker.mode", "Rootless")},
	{name: "queue policy", edit: harness.SetField("scaling.policy", "Queue")},
	{name: "pull policy Never", edit: harness.SetField("runner.imagePullPolicy", "Never")},
	{name: "pull policy lowercase", edit: harness.SetField("runner.imagePullPolicy", "never"), reject: "spec.runner.imagePullPolicy"},

	// Strings: empty, whitespace, unicode, very long.
	{name: "label at 50 characters", edit: harness.SetField("labels", []any{strings.Repeat("a", 50)})},
	{name: "label at 51 characters", edit: harness.SetField("labels", []any{strings.Repeat("a", 51)}), reject: "spec.labels[0]"},
	{name: "label with unicode", edit: harness.SetField("labels", []any{"bäckend"}), reject: "spec.labels[0]"},
	{name: "empty label", edit: harness.SetField("labels", []any{""}), reject: "spec.labels[0]"},
	{name: "no labels", edit: harness.SetField("labels", []any{})},
	{name: "secret name of spaces", edit: harness.SetField("bitbucket.credentialsSecretRef.name", "   ")},
	{name: "secret name at 253 characters", edit: harness.SetField("bitbucket.credentialsSecretRef.name", strings.Repeat("s", 253))},
	{name: "secret name at 254 characters", edit: harness.SetField("bitbucket.credentialsSecretRef.name", strings.Repeat("s", 254)), reject: "spec.bitbucket.credentialsSecretRef.name"},
	{name: "empty image", edit: harness.SetField("runner.image", ""), reject: "spec.runner.image"},
	{name: "image at 512 characters", edit: harness.SetField("runner.image", "registry.example/"+strings.Repeat("i", 495))},
	{name: "image past 512 characters", edit: harness.SetField("runner.image", strings.Repeat("i", 513)), reject: "spec.runner.image"},
	{name: "image with unicode", edit: harness.SetField("docker.image", "dökker:dind")},
	{name: "working directory with a space", edit: harness.SetField("runner.workingDirectory", "/tmp/my builds"), reject: "spec.runner.workingDirectory"},
	{name: "working directory past 255 characters", edit: harness.SetField("runner.workingDirectory", "/"+strings.Repeat("d", 255)), reject: "spec.runner.workingDirectory"},
	{name: "api URL not http", edit: harness.SetField("bitbucket.apiURL", "ftp://bitbucket.example"), reject: "spec.bitbucket.apiURL"},
	{name: "priority class with spaces", edit: harness.SetField("template.priorityClassName", "High Priority"), reject: "spec.template.priorityClassName"},
	{name: "service account with unicode", edit: harness.SetField("template.serviceAccountName", "bäuer"), reject: "spec.template.serviceAccountName"},
	{name: "node selector with unicode", edit: harness.SetField("template.nodeSelector", map[string]any{"zone": "zürich"})},
	{name: "repository slug", edit: harness.SetField("scaling.repositories", []any{"my.repo_2-x", "{" + strings.Trim(bbsim.DefaultRepositoryUUID, "{}") + "}"})},
	{name: "repository ..", edit: harness.SetField("scaling.repositories", []any{".."}), reject: "spec.scaling.repositories[0]"},
	{name: "repository .", edit: harness.SetField("scaling.repositories", []any{"."}), reject: "spec.scaling.repositories[0]"},
	{name: "repository with a slash", edit: harness.SetField("scaling.repositories", []any{"a/../b"}), reject: "spec.scaling.repositories[0]"},
	{name: "repository escaped", edit: harness.SetField("scaling.repositories", []any{"%2e%2e"}), reject: "spec.scaling.repositories[0]"},

	// Durations, in the language of time.ParseDuration and not.
	{name: "poll interval in words", edit: harness.SetField("scaling.pollInterval", "5 minutes"), reject: "spec.scaling.pollInterval"},
	{name: "poll interval empty", edit: harness.SetField("scaling.pollInterval", ""), reject: "spec.scaling.pollInterval"},
	{name: "poll interval compound", edit: harness.SetField("scaling.pollInterval", "1m30s")},
	{name: "poll interval overflowing", edit: harness.SetField("scaling.pollInterval", "99999999999999h"), reject: "spec.scaling.pollInterval"},
	{name: "max age in words", edit: harness.SetField("runner.maxAge", "one day"), reject: "spec.runner.maxAge"},
	{name: "max age zero", edit: harness.SetField("runner.maxAge", "0s")},
	{name: "max age a year", edit: harness.SetField("runner.maxAge", "8760h")},
	{name: "max age past a year", edit: harness.SetField("runner.maxAge", "8761h"), reject: "maxAge must be between 0s and 8760h"},
	{name: "max age negative", edit: harness.SetField("runner.maxAge", "-1h"), reject: "spec.runner.maxAge"},
	{name: "scale-down delay fractional", edit: harness.SetField("scaling.scaleDownDelay", "1.5h")},
	{name: "pending timeout without unit", edit: harness.SetField("scaling.pendingTimeout", "600"), reject: "spec.scaling.pendingTimeout"},
	{name: "duration a number", edit: harness.SetField("scaling.scaleDownDelay", int64(300)), reject: "spec.scaling.scaleDownDelay"},

	// Quantities, in the language of resource.ParseQuantity and not.
	{name: "memory in words", edit: harness.SetField("runner.memory", "lots"), reject: "spec.runner.memory"},
	{name: "memory as a number", edit: harness.SetField("runner.memory", int64(1<<30))},
	{name: "memory with an exponent", edit: harness.SetField("runner.memory", "1e9")},
	{name: "cpu with a fractional exponent", edit: harness.SetField("runner.resources", map[string]any{"limits": map[string]any{"cpu": "1e.5"}}), reject: "spec.runner.resources.limits.cpu"},
	{name: "cpu with a huge exponent", edit: harness.SetField("runner.resources", map[string]any{"requests": map[string]any{"cpu": "1e99999999999"}}), reject: "spec.runner.resources.requests.cpu"},
	{name: "docker memory fractional", edit: harness.SetField("docker.resources", map[string]any{"requests": map[string]any{"memory": "1.5Gi"}})},
	{name: "size limit in words", edit: harness.SetField("runner.workVolume", map[string]any{"emptyDir": map[string]any{"sizeLimit": "big"}}), reject: "spec.runner.workVolume.emptyDir.sizeLimit"},

	// The layer cache: its size's floor, its percentage and its access modes.
	{name: "layer cache of 50Gi", edit: harness.SetField("docker.layerCache", map[string]any{"size": "50Gi", "storageClassName": "fast", "accessModes": []any{"ReadWriteOncePod"}, "pruneAbovePercent": int64(100)})},
	{name: "layer cache size as a number", edit: harness.SetField("docker.layerCache", map[string]any{"size": int64(2 << 30)})},
	{name: "layer cache below 1Gi", edit: harness.SetField("docker.layerCache", map[string]any{"size": "512Mi"}), reject: "layerCache.size must be at least 1Gi"},
	{name: "layer cache size in words", edit: harness.SetField("docker.layerCache", map[string]any{"size": "big"}), reject: "spec.docker.layerCache.size"},
	{name: "layer cache without a size", edit: harness.SetField("docker.layerCache", map[string]any{}), reject: "spec.docker.layerCache.size"},
	{name: "layer cache pruned above 0%", edit: harness.SetField("docker.layerCache", map[string]any{"size": "10Gi", "pruneAbovePercent": int64(0)}), reject: "spec.docker.layerCache.pruneAbovePercent"},
	{name: "layer cache read-only", edit: harness.SetField("docker.layerCache", map[string]any{"size": "10Gi", "accessModes": []any{"ReadOnlyMany"}}), reject: "spec.docker.layerCache.accessModes[0]"},

	// Decimals of the PercentageIdle policy and their ranges.
	{name: "percentage idle in range", edit: percentageIdle("0.8", "0.1", "2", "0.25")},
	{name: "threshold above 1", edit: percentageIdle("1.5", "0.2", "1.5", "0.5"), reject: "scaleUpThreshold must be between 0 and 1"},
	{name: "thresholds equal", edit: percentageIdle("0.5", "0.5", "1.5", "0.5"), reject: "scaleDownThreshold must be below scaleUpThreshold"},
	{name: "scale-up multiplier 1", edit: percentageIdle("0.5", "0.2", "1", "0.5"), reject: "scaleUpMultiplier must be greater than 1"},
	{name: "scale-down multiplier 1", edit: percentageIdle("0.5", "0.2", "1.5", "1"), reject: "scaleDownMultiplier must be between 0 and 1"},
	{name: "scale-down multiplier 0", edit: percentageIdle("0.5", "0.2", "1.5", "0"), reject: "scaleDownMultiplier must be between 0 and 1"},
	{name: "decimal not a number", edit: percentageIdle("half", "0.2", "1.5", "0.5"), reject: "spec.scaling.percentageIdle.scaleUpThreshold"},
	{name: "decimal a JSON number", edit: percentageIdle(0.5, "0.2", "1.5", "0.5"), reject: "spec.scaling.percentageIdle.scaleUpThreshold"},

	// Schedules: HH:MM from 00:00 to 24:00, IANA zones (one the schema accepts and Go does not
	// know is reported, not fatal), weekdays by their abbreviation.
	{name: "schedule whole day", edit: schedule(map[string]any{"start": "00:00", "end": "24:00", "minRunners": int64(0)})},
	{name: "schedule past midnight in a zone", edit: schedule(map[string]any{"start": "22:00", "end": "06:00", "timeZone": "America/Argentina/Buenos_Aires", "days": []any{"Fri", "Sat"}, "idleRunners": int64(0)})},
	{name: "schedule start 24:00", edit: schedule(map[string]any{"start": "24:00", "end": "06:00", "minRunners": int64(0)}), reject: "start must be before 24:00"},
	{name: "schedule start equals end", edit: schedule(map[string]any{"start": "08:00", "end": "08:00", "minRunners": int64(0)}), reject: "start and end must differ"},
	{name: "schedule hour 25", edit: schedule(map[string]any{"start": "25:00", "end": "06:00", "minRunners": int64(0)}), reject: "spec.schedules[0].start"},
	{name: "schedule time without a colon", edit: schedule(map[string]any{"start": "0800", "end": "0900", "minRunners": int64(0)}), reject: "spec.schedules[0].start"},
	{name: "schedule lowercase day", edit: schedule(map[string]any{"start": "08:00", "end": "09:00", "days": []any{"mon"}, "minRunners": int64(0)}), reject: "spec.schedules[0].days[0]"},
	{name: "schedule setting nothing", edit: schedule(map[string]any{"start": "08:00", "end": "09:00"}), reject: "a schedule sets minRunners, idleRunners or both"},
	{name: "schedule minimum above max", edit: schedule(map[string]any{"start": "08:00", "end": "09:00", "minRunners": int64(11)}), reject: "a schedule's minRunners must not be greater than maxRunners"},
	{name: "schedule zone with spaces", edit: schedule(map[string]any{"start": "08:00", "end": "09:00", "timeZone": "Europe/Paris ", "minRunners": int64(0)}), reject: "spec.schedules[0].timeZone"},
	{name: "schedule zone Go does not know (reported)", edit: schedule(map[string]any{"start": "08:00", "end": "09:00", "timeZone": "Mars/Olympus_Mons", "minRunners": int64(0)})},

	// Raw fields of the wrong shape, and unknown fields.
	{name: "runner a string", edit: harness.SetField("runner", "big"), reject: "spec.runner"},
	{name: "labels a string", edit: harness.SetField("labels", "docker"), reject: "spec.labels"},
	{name: "tolerations an object", edit: harness.SetField("template.tolerations", map[string]any{"key": "k"}), reject: "spec.template.tolerations"},
	{name: "pod label a number", edit: harness.SetField("template.metadata.labels", map[string]any{"team": int64(5)}), reject: "spec.template.metadata.labels.team"},
	{name: "env value a number", edit: harness.SetField("runner.env", []any{map[string]any{"name": "A", "value": int64(5)}}), reject: "spec.runner.env[0].value"},
	{name: "unknown fields are dropped", edit: allOf(harness.SetField("surprise", "x"), harness.SetField("runner.surprise", int64(1)))},
	{name: "affinity a string", edit: harness.SetField("template.affinity", "anywhere"), reject: "spec.template.affinity"},
	{name: "affinity of the wrong shape (schemaless)", edit: harness.SetField("template.affinity", map[string]any{"nodeAffinity": "anywhere"}), reason: controllers.ReasonInvalidSpec},
	{name: "ephemeral volume of the wrong shape (schemaless)", edit: harness.SetField("runner.workVolume", map[string]any{"ephemeral": map[string]any{"volumeClaimTemplate": []any{}}}), reason: controllers.ReasonInvalidSpec},
	{name: "affinity with unknown fields (schemaless)", edit: harness.SetField("template.affinity", map[string]any{"nodeAffinity": map[string]any{}, "future": true})},

	// Step images and docker daemon settings.
	{name: "step images in a private registry", edit: harness.SetField("runner.images", map[string]any{"pause": "registry.internal:5000/pause:3.9", "authProxy": "r.example/auth-proxy@sha256:" + strings.Repeat("a", 64), "clone": "r.example/clone:1"})},
	{name: "step image empty", edit: harness.SetField("runner.images.pause", ""), reject: "spec.runner.images.pause"},
	{name: "step image with a space", edit: harness.SetField("runner.images.clone", "r.example/clone 1"), reject: "spec.runner.images.clone"},
	{name: "step image past 512 characters", edit: harness.SetField("runner.images.authProxy", strings.Repeat("i", 513)), reject: "spec.runner.images.authProxy"},
	{name: "mtu at its bounds", edit: harness.SetField("docker.mtu", int64(576))},
	{name: "mtu below 576", edit: harness.SetField("docker.mtu", int64(575)), reject: "spec.docker.mtu"},
	{name: "mtu past 9216", edit: harness.SetField("docker.mtu", int64(9217)), reject: "spec.docker.mtu"},
	{name: "mtu a string", edit: harness.SetField("docker.mtu", "1400"), reject: "spec.docker.mtu"},
	{name: "registry mirror a URL", edit: harness.SetField("docker.registryMirrors", []any{"https://mirror.example:5000/", "http://10.0.0.1"})},
	{name: "registry mirror without a scheme", edit: harness.SetField("docker.registryMirrors", []any{"mirror.example"}), reject: "spec.docker.registryMirrors[0]"},
	{name: "insecure registries", edit: harness.SetField("docker.insecureRegistries", []any{"registry.internal:5000", "10.0.0.0/8"})},
	{name: "insecure registry with a scheme", edit: harness.SetField("docker.insecureRegistries", []any{"http://registry.internal"}), reject: "spec.docker.insecureRegistries[0]"},
	{name: "docker args of the user", edit: harness.SetField("docker.args", []any{"--debug", "--log-level=warn"})},
	{name: "docker args moving the socket", edit: harness.SetField("docker.args", []any{"--host=tcp://0.0.0.0:2375"}), reject: "docker.args must not set --host"},
	{name: "docker args moving the data root", edit: harness.SetField("docker.args", []any{"-g", "/data"}), reject: "docker.args must not set"},
	{name: "docker args past 1024 characters", edit: harness.SetField("docker.args", []any{strings.Repeat("a", 1025)}), reject: "spec.docker.args[0]"},
	{name: "CA from a ConfigMap", edit: harness.SetField("docker.caCertificates", []any{map[string]any{"registry": "registry.internal:5000", "configMapRef": map[string]any{"name": "ca", "key": "ca.crt"}}})},
	{name: "CA from both", edit: harness.SetField("docker.caCertificates", []any{map[string]any{"registry": "r.example", "configMapRef": map[string]any{"name": "ca", "key": "k"}, "secretRef": map[string]any{"name": "ca", "key": "k"}}}), reject: "set exactly one of configMapRef and secretRef"},
	{name: "CA registry a path", edit: harness.SetField("docker.caCertificates", []any{map[string]any{"registry": "../etc", "configMapRef": map[string]any{"name": "ca", "key": "k"}}}), reject: "spec.docker.caCertificates[0].registry"},
	{name: "CA key a path", edit: harness.SetField("docker.caCertificates", []any{map[string]any{"registry": "r.example", "configMapRef": map[string]any{"name": "ca", "key": "a/b"}}}), reject: "spec.docker.caCertificates[0].configMapRef.key"},
	{name: "daemon config name with unicode", edit: harness.SetField("docker.daemonConfig", map[string]any{"name": "dämon", "key": "daemon.json"}), reject: "spec.docker.daemonConfig.name"},
	{name: "proxy without a scheme", edit: harness.SetField("docker.proxy", map[string]any{"httpsProxy": "proxy:3128"}), reject: "spec.docker.proxy.httpsProxy"},
	{name: "no-proxy with a space", edit: harness.SetField("docker.proxy", map[string]any{"noProxy": ".svc, .local"}), reject: "spec.docker.proxy.noProxy"},
	{name: "pull secret", edit: harness.SetField("docker.pullSecretRef", map[string]any{"name": "registry"})},

	// The pod template: its metadata is checked, its spec is schemaless.
	{name: "template label of the operator", edit: harness.SetField("template.metadata.labels", map[string]any{v1alpha1.LabelPool: "other"}), reject: "must not set ci.runnerpool.dev/pool"},
	{name: "template annotation of the operator", edit: harness.SetField("template.metadata.annotations", map[string]any{"ci.runnerpool.dev/template-hash": "x"}), reject: "must not set ci.runnerpool.dev/runner-uuid or ci.runnerpool.dev/template-hash"},
	{name: "template spec a string", edit: harness.SetField("template.spec", "pod"), reject: "spec.template.spec"},
	{name: "template spec of the wrong shape (schemaless)", edit: harness.SetField("template.spec", map[string]any{"containers": "runner"}), reason: controllers.ReasonInvalidSpec},
	{name: "template spec with unknown fields (schemaless)", edit: harness.SetField("template.spec", map[string]any{"hostAliases": []any{map[string]any{"ip": "10.0.0.5", "hostnames": []any{"r.internal"}}}, "future": true})},
	{name: "template spec clashing with the operator", edit: harness.SetField("template.spec", map[string]any{"restartPolicy": "Always"}), reason: controllers.ReasonInvalidPodTemplate},
}

// TestPoolsAtTheEdgesOfTheSchemaAreRejectedOrReconciled creates one pool per case while another
// pool scales for waiting steps: each is rejected with a message naming the field, or accepted,
// read and reconciled, and the other pool's steps all run.
func TestPoolsAtTheEdgesOfTheSchemaAreRejectedOrReconciled(t *testing.T) {
	ns := namespace(t)
	const label = "steady"
	steady := createPool(t, harness.Pool(ns, label, 1, 4))
	onlyRunner(t, ns, steady)

	accepted := map[string]edgeCase{}
	for i, tc := range edgeCases {
		obj := poolFromYAML(t, ns, edgePool, tc.edit)
		obj.SetName(fmt.Sprintf("edge-%02d", i))
		err := sys.Client.Create(t.Context(), obj)
		switch {
		case tc.reject != "" && err == nil:
			t.Errorf("%s: accepted; want a rejection naming %q", tc.name, tc.reject)
		case tc.reject != "" && !strings.Contains(err.Error(), tc.reject):
			t.Errorf("%s: rejected with %q; want the message to contain %q", tc.name, err, tc.reject)
		case tc.reject == "" && err != nil:
			t.Errorf("%s: rejected: %v", tc.name, err)
		case tc.reject == "":
			accepted[obj.GetName()] = tc
		default:
			t.Logf("%s: %v", tc.name, err)
		}
	}
	t.Logf("%d cases, %d accepted", len(edgeCases), len(accepted))

	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 3, RunsOn: []string{"self.hosted", "linux", label}, Duration: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "every accepted pool reconciled and the steady pool's steps done", func() (bool, string) {
		for name, tc := range accepted {
			pool := getPool(t, ns, name)
			ready := condition(pool, v1alpha1.ConditionReady)
			if ready == nil || pool.Status.ObservedGeneration != pool.Generation {
				return false, fmt.Sprintf("%s (%s) not reconciled yet", name, tc.name)
			}
			if got := ready.Reason == controllers.ReasonInvalidSpec; got != (tc.reason == controllers.ReasonInvalidSpec) || (tc.reason != "" && ready.Reason != tc.reason) {
				t.Fatalf("%s: Ready reason %s (%s); want InvalidSpec %v", tc.name, ready.Reason, ready.Message, !got)
			}
		}
		done := 0
		for _, s := range stepsOf(label) {
			if s.Status == "completed" {
				done++
			}
		}
		return done == 3, fmt.Sprintf("%d of 3 steps of the steady pool done", done)
	})
	for name, tc := range accepted {
		ready := condition(getPool(t, ns, name), v1alpha1.ConditionReady)
		t.Logf("%s: accepted, Ready=%s %s: %s", tc.name, ready.Status, ready.Reason, ready.Message)
	}
	for name := range accepted {
		deleteAndWaitGone(t, &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, 60*time.Second)
	}
	deleteAndWaitGone(t, steady, 60*time.Second)
}

// TestAPoolTheOperatorCannotReadIsReportedAndLeftAloneWhileOthersScale breaks a running pool
// through a schemaless field the API server cannot check, then one of its Runners through a
// status timestamp the API server takes and Go does not: each is reported on the object, in an
// event and in runnerpool_undecodable_objects, its runner keeps running, and another pool goes
// on scaling, across a restart of the operator too. Fixed, the pool carries on.
func TestAPoolTheOperatorCannotReadIsReportedAndLeftAloneWhileOthersScale(t *testing.T) {
	ns := namespace(t)
	victim := createPool(t, harness.Pool(ns, "victim", 1, 3))
	runner := onlyRunner(t, ns, victim)
	const label = "bystander"
	bystander := createPool(t, harness.Pool(ns, label, 0, 4))
	prefix := controllers.BitbucketNamePrefix(victim)

	patchSpec(t, victim, `{"spec":{"template":{"affinity":{"nodeAffinity":"anywhere"}}}}`)
	eventually(t, 30*time.Second, "the pool to report it cannot be read", func() (bool, string) {
		c := condition(getPool(t, ns, victim.Name), v1alpha1.ConditionReady)
		if c == nil || c.Reason != controllers.ReasonInvalidSpec {
			return false, fmt.Sprintf("Ready %+v", c)
		}
		if !strings.Contains(c.Message, "spec.template.affinity.nodeAffinity") {
			t.Fatalf("the message does not name the field: %s", c.Message)
		}
		return true, ""
	})
	if got := testutil.ToFloat64(metrics.UndecodableObjects.WithLabelValues(ns, "RunnerPool", victim.Name)); got != 1 {
		t.Errorf("runnerpool_undecodable_objects = %v, want 1", got)
	}
	if !slicesContainPrefix(events(t, ns, victim.Name), controllers.ReasonInvalidSpec+": ") {
		t.Errorf("no InvalidSpec event; events: %v", events(t, ns, victim.Name))
	}
	bystanderScales(t, label, 2)
	assertRunnerKept(t, runner, prefix)

	// A fresh start lists every pool, the unreadable one included, and still syncs.
	if err := sys.StopManager(); err != nil {
		t.Fatal(err)
	}
	if err := sys.StartManager(testLogger()); err != nil {
		t.Fatal(err)
	}
	bystanderScales(t, label, 2)
	assertRunnerKept(t, runner, prefix)

	patchSpec(t, victim, `{"spec":{"template":{"affinity":null}}}`)
	eventually(t, 30*time.Second, "the fixed pool to be Ready again", func() (bool, string) {
		c := condition(getPool(t, ns, victim.Name), v1alpha1.ConditionReady)
		return c != nil && c.Status == "True", fmt.Sprintf("Ready %+v", c)
	})
	if n := testutil.CollectAndCount(metrics.UndecodableObjects); n != 0 {
		t.Errorf("%d runnerpool_undecodable_objects series after the fix, want 0", n)
	}

	// A Runner whose status the API server accepts (its date-time format takes a lowercase
	// "t" and "z") and Go does not: the pool holds still rather than guess whether it is busy.
	patchRunnerStatus(t, runner, `{"status":{"registeredTime":"2026-01-01t00:00:00z"}}`)
	eventually(t, 30*time.Second, "the pool to report the Runner it cannot read", func() (bool, string) {
		c := condition(getPool(t, ns, victim.Name), v1alpha1.ConditionScalingActive)
		return c != nil && c.Reason == controllers.ReasonRunnerUndecodable && strings.Contains(c.Message, runner.Name), fmt.Sprintf("ScalingActive %+v", c)
	})
	eventually(t, 30*time.Second, "the Runner's event and metric", func() (bool, string) {
		got := testutil.ToFloat64(metrics.UndecodableObjects.WithLabelValues(ns, "Runner", runner.Name))
		evs := events(t, ns, runner.Name)
		return got == 1 && slicesContainPrefix(evs, controllers.ReasonInvalidSpec+": "), fmt.Sprintf("metric %v, events %v", got, evs)
	})
	bystanderScales(t, label, 2)
	assertRunnerKept(t, runner, prefix)

	patchRunnerStatus(t, runner, `{"status":{"registeredTime":"2026-01-01T00:00:00Z"}}`)
	eventually(t, 30*time.Second, "the pool to scale again", func() (bool, string) {
		c := condition(getPool(t, ns, victim.Name), v1alpha1.ConditionScalingActive)
		return c != nil && c.Reason != controllers.ReasonRunnerUndecodable, fmt.Sprintf("ScalingActive %+v", c)
	})
	deleteAndWaitGone(t, victim, 60*time.Second)
	if bb := bbRunners(prefix); len(bb) != 0 {
		t.Errorf("the deleted pool left Bitbucket runners: %+v", bb)
	}
	deleteAndWaitGone(t, bystander, 60*time.Second)
}

// bystanderScales queues n steps for the label and waits for them all to run.
func bystanderScales(t *testing.T, label string, n int) {
	t.Helper()
	before := 0
	for _, s := range stepsOf(label) {
		if s.Status == "completed" {
			before++
		}
	}
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: n, RunsOn: []string{"self.hosted", "linux", label}, Duration: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "the other pool to run its steps", func() (bool, string) {
		done := 0
		for _, s := range stepsOf(label) {
			if s.Status == "completed" {
				done++
			}
		}
		return done == before+n, fmt.Sprintf("%d of %d steps done", done-before, n)
	})
}

// assertRunnerKept checks that the runner, its pod and its Bitbucket runner are all still there.
func assertRunnerKept(t *testing.T, runner *v1alpha1.Runner, prefix string) {
	t.Helper()
	current := &unstructured.Unstructured{}
	current.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("Runner"))
	if err := sys.Client.Get(t.Context(), client.ObjectKeyFromObject(runner), current); err != nil {
		t.Fatalf("runner %s: %v", runner.Name, err)
	}
	if current.GetDeletionTimestamp() != nil {
		t.Fatalf("runner %s is being deleted", runner.Name)
	}
	if drain, _, _ := unstructured.NestedBool(current.Object, "spec", "drain"); drain {
		t.Fatalf("runner %s is draining", runner.Name)
	}
	bb := bbRunners(prefix)
	if len(bb) != 1 || bb[0].Status != "ONLINE" {
		t.Fatalf("Bitbucket runners of the pool: %+v, want one ONLINE", bb)
	}
}

func patchSpec(t *testing.T, pool *v1alpha1.RunnerPool, patch string) {
	t.Helper()
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("RunnerPool"))
	obj.SetNamespace(pool.Namespace)
	obj.SetName(pool.Name)
	if err := sys.Client.Patch(t.Context(), obj, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatalf("patch pool: %v", err)
	}
}

func patchRunnerStatus(t *testing.T, runner *v1alpha1.Runner, patch string) {
	t.Helper()
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("Runner"))
	obj.SetNamespace(runner.Namespace)
	obj.SetName(runner.Name)
	if err := sys.Client.Status().Patch(t.Context(), obj, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatalf("patch runner status: %v", err)
	}
}

func slicesContainPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}
