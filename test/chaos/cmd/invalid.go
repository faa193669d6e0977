package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

var poolGVK = schema.GroupVersionKind{Group: "ci.runnerpool.dev", Version: "v1alpha1", Kind: "RunnerPool"}

// invalidPool is one way to get a RunnerPool wrong, and the words the rejection must contain so
// that its author knows what to fix.
type invalidPool struct {
	name string
	edit func(spec map[string]any)
	// update applies edit to an existing valid pool instead of creating one (immutable fields).
	update bool
	want   string
}

func both(edits ...func(map[string]any)) func(map[string]any) {
	return func(spec map[string]any) {
		for _, e := range edits {
			e(spec)
		}
	}
}

var invalidPools = []invalidPool{
	{name: "minRunners above maxRunners", edit: both(harness.SetField("minRunners", int64(6)), harness.SetField("maxRunners", int64(3))), want: "minRunners must not be greater than maxRunners"},
	{name: "maxRunners 0", edit: harness.SetField("maxRunners", int64(0)), want: "spec.maxRunners"},
	{name: "maxRunners above Bitbucket's 100", edit: harness.SetField("maxRunners", int64(150)), want: "spec.maxRunners"},
	{name: "negative minRunners", edit: harness.SetField("minRunners", int64(-2)), want: "spec.minRunners"},
	{name: "label with capitals", edit: harness.SetField("labels", []any{"GPU"}), want: "spec.labels[0]"},
	{name: "label with an underscore", edit: harness.SetField("labels", []any{"big_box"}), want: "spec.labels[0]"},
	{name: "label ending in a dot", edit: harness.SetField("labels", []any{"docker."}), want: "spec.labels[0]"},
	{name: "label of 51 characters", edit: harness.SetField("labels", []any{strings.Repeat("a", 51)}), want: "spec.labels[0]"},
	{name: "eleven labels", edit: harness.SetField("labels", []any{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"}), want: "spec.labels"},
	{name: "four platform labels", edit: harness.SetField("platformLabels", []any{"self.hosted", "linux", "linux.arm", "x"}), want: "spec.platformLabels"},
	{name: "workspace missing", edit: harness.UnsetField("bitbucket.workspace"), want: "spec.bitbucket.workspace"},
	{name: "workspace given as a slug", edit: harness.SetField("bitbucket.workspace", "my-team"), want: "spec.bitbucket.workspace"},
	{name: "repository without braces", edit: harness.SetField("bitbucket.repository", "c3e9a7d2-1f6b-4a8e-b5d0-2e7f9c4a6b31"), want: "spec.bitbucket.repository"},
	{name: "empty credentials secret name", edit: harness.SetField("bitbucket.credentialsSecretRef.name", ""), want: "spec.bitbucket.credentialsSecretRef.name"},
	{name: "API URL that is not http(s)", edit: harness.SetField("bitbucket.apiURL", "ftp://bitbucket.example"), want: "spec.bitbucket.apiURL"},
	{name: "unknown scaling policy", edit: harness.SetField("scaling.policy", "Fastest"), want: "spec.scaling.policy"},
	{name: "PercentageIdle without its settings", edit: harness.SetField("scaling.policy", "PercentageIdle"), want: "percentageIdle settings are required"},
	{name: "scale-up threshold not a number", edit: both(harness.SetField("scaling.policy", "PercentageIdle"), harness.SetField("scaling.percentageIdle.scaleUpThreshold", "high")), want: "scaleUpThreshold"},
	{name: "poll interval of 2s", edit: harness.SetField("scaling.pollInterval", "2s"), want: "pollInterval must be between 5s and 10m"},
	{name: "scale-down delay of 25h", edit: harness.SetField("scaling.scaleDownDelay", "25h"), want: "scaleDownDelay must be between 0s and 24h"},
	{name: "pending timeout of 10s", edit: harness.SetField("scaling.pendingTimeout", "10s"), want: "pendingTimeout must be between 30s and 1h"},
	{name: "idleRunners above 100", edit: harness.SetField("scaling.idleRunners", int64(101)), want: "spec.scaling.idleRunners"},
	{name: "unknown step size", edit: harness.SetField("runner.stepSize", "16x"), want: "spec.runner.stepSize"},
	{name: "runner memory of 128Mi", edit: harness.SetField("runner.memory", "128Mi"), want: "runner memory must be at least 512Mi"},
	{name: "relative working directory", edit: harness.SetField("runner.workingDirectory", "builds"), want: "spec.runner.workingDirectory"},
	{name: "unknown image pull policy", edit: harness.SetField("runner.imagePullPolicy", "Sometimes"), want: "spec.runner.imagePullPolicy"},
	{name: "negative maxSteps", edit: harness.SetField("runner.maxSteps", int64(-1)), want: "spec.runner.maxSteps"},
	{name: "work volume both emptyDir and ephemeral", edit: harness.SetField("runner.workVolume", map[string]any{
		"emptyDir": map[string]any{}, "ephemeral": map[string]any{"volumeClaimTemplate": map[string]any{"spec": map[string]any{}}},
	}), want: "set at most one of emptyDir and ephemeral"},
	{name: "unsupported platform", edit: harness.SetField("platform", "linux/s390x"), want: "spec.platform"},
	{name: "workspace changed on an existing pool", update: true, edit: harness.SetField("bitbucket.workspace", limitWorkspaceUUID), want: "workspace is immutable"},
	{name: "repository added to an existing pool", update: true, edit: harness.SetField("bitbucket.repository", bbsim.DefaultRepositoryUUID), want: "repository is immutable"},
}

func validPoolObject(namespace, name string) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"bitbucket": map[string]any{
				"workspace":            bbsim.DefaultWorkspaceUUID,
				"credentialsSecretRef": map[string]any{"name": "bitbucket"},
			},
			"minRunners": int64(0),
			"maxRunners": int64(2),
			"scaling":    map[string]any{"idleRunners": int64(0)},
		},
	}}
	obj.SetGroupVersionKind(poolGVK)
	obj.SetNamespace(namespace)
	obj.SetName(name)
	return obj
}

// phaseInvalidPools submits every invalid pool of the table and checks that the API server
// refuses it with a message naming what is wrong.
func (r *run) phaseInvalidPools(ctx context.Context) error {
	sc := r.begin("invalid RunnerPools rejected by the API server")
	defer r.end(sc)
	ns := r.env.consumers[0].namespace
	base := validPoolObject(ns, "valid-base")
	if err := r.env.c.Create(ctx, base); err != nil {
		return fmt.Errorf("create the valid pool the update cases change: %w", err)
	}
	defer func() {
		_ = r.env.c.Delete(context.WithoutCancel(ctx), base)
	}()

	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tREJECTED\tMESSAGE")
	tried, rejected := 0, 0
	for i, tc := range invalidPools {
		tried++
		var err error
		if tc.update {
			obj := &unstructured.Unstructured{}
			obj.SetGroupVersionKind(poolGVK)
			if err = r.env.c.Get(ctx, client.ObjectKeyFromObject(base), obj); err != nil {
				return fmt.Errorf("get the valid pool: %w", err)
			}
			tc.edit(obj.Object["spec"].(map[string]any))
			err = r.env.c.Update(ctx, obj)
		} else {
			obj := validPoolObject(ns, fmt.Sprintf("invalid-%02d", i))
			tc.edit(obj.Object["spec"].(map[string]any))
			err = r.env.c.Create(ctx, obj)
			if err == nil {
				_ = r.env.c.Delete(ctx, obj)
			}
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		ok := err != nil && (apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)) && strings.Contains(msg, tc.want)
		switch {
		case err == nil:
			r.res.violation(violationInvalidAccepted, fmt.Sprintf("%q was accepted", tc.name))
		case !ok:
			r.res.violation(violationUnclearRejection, fmt.Sprintf("%q was rejected without naming %q: %s", tc.name, tc.want, msg))
		default:
			rejected++
		}
		fmt.Fprintf(tw, "%s\t%t\t%s\n", tc.name, ok, strings.ReplaceAll(msg, "\n", " "))
	}
	_ = tw.Flush()
	_ = os.WriteFile(filepath.Join(r.tmp, "invalid-pools.txt"), []byte(table.String()), 0o644)
	r.res.mu.Lock()
	r.res.InvalidPoolsTried, r.res.InvalidPoolsRejected = tried, rejected
	r.res.mu.Unlock()
	sc.note("%d of %d rejected with a message naming the field (test/chaos/tmp/invalid-pools.txt)", rejected, tried)
	// The valid pool goes before the kill cycles start counting runners.
	if err := r.env.c.Delete(ctx, base); err == nil {
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if err := r.env.c.Get(ctx, client.ObjectKeyFromObject(base), base.DeepCopy()); apierrors.IsNotFound(err) {
				break
			}
			_ = sleep(ctx, 500*time.Millisecond)
		}
	}
	return nil
}
