package migrate_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/migrate"
)

const (
	workspaceUUID = "{0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}"
	repoUUID      = "{5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d}"
)

var names = map[string]string{"acme": workspaceUUID, "web-app": repoUUID}

// group is one group of a runners_config.yaml, with its parameters indented under it.
func group(fields string) string {
	return "groups:\n  - " + strings.ReplaceAll(strings.TrimSpace(fields), "\n", "\n    ") + "\n"
}

const params = `parameters:
  min: 1
  max: 5
  scaleUpThreshold: 0.8
  scaleDownThreshold: 0.2
  scaleUpMultiplier: 1.5
  scaleDownMultiplier: 0.5`

func TestConvertGroups(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		opts  migrate.Options
		check func(t *testing.T, p *v1alpha1.RunnerPool)
	}{
		{
			name: "a workspace group by UUID: labels without the system and marker labels, min/max, thresholds",
			file: group(`name: "Runner group 1"
workspace: "` + workspaceUUID + `"
labels: [self.hosted, linux, builds, autoscaler.created, builds]
namespace: ci
strategy: percentageRunnersIdle
` + params),
			check: func(t *testing.T, p *v1alpha1.RunnerPool) {
				want(t, "name", p.Name, "runner-group-1")
				want(t, "namespace", p.Namespace, "ci")
				want(t, "workspace", string(p.Spec.Bitbucket.Workspace), workspaceUUID)
				want(t, "repository", string(p.Spec.Bitbucket.Repository), "")
				want(t, "labels", strings.Join(labelsOf(p), ","), "builds")
				want(t, "min/max", strings.Join([]string{itoa(p.Spec.MinRunners), itoa(p.Spec.MaxRunners)}, "/"), "1/5")
				want(t, "policy", string(p.Spec.Scaling.Policy), string(v1alpha1.ScalingPolicyPercentageIdle))
				pi := p.Spec.Scaling.PercentageIdle
				want(t, "thresholds", strings.Join([]string{string(pi.ScaleUpThreshold), string(pi.ScaleDownThreshold), string(pi.ScaleUpMultiplier), string(pi.ScaleDownMultiplier)}, " "), "0.8 0.2 1.5 0.5")
				want(t, "secret", p.Spec.Bitbucket.CredentialsSecretRef.Name, "bitbucket-credentials")
			},
		},
		{
			name: "a repository group by names, resolved with --uuid; braces added to a bare UUID",
			file: group(`name: Web
workspace: acme
repository: web-app
namespace: ci
strategy: percentageRunnersIdle
` + params),
			opts: migrate.Options{UUIDs: map[string]string{"acme": strings.Trim(workspaceUUID, "{}"), "web-app": repoUUID}},
			check: func(t *testing.T, p *v1alpha1.RunnerPool) {
				want(t, "workspace", string(p.Spec.Bitbucket.Workspace), workspaceUUID)
				want(t, "repository", string(p.Spec.Bitbucket.Repository), repoUUID)
			},
		},
		{
			name: "snake_case parameters, quoted numbers, and a namespace and Secret from the options",
			file: group(`name: "ARM builds!"
workspace: "` + workspaceUUID + `"
namespace: elsewhere
strategy: percentageRunnersIdle
parameters:
  min: 0
  max: "3"
  scale_up_threshold: "0.5"
  scale_down_threshold: 0.1
  scale_up_multiplier: 2
  scale_down_multiplier: 0.25`),
			opts: migrate.Options{Namespace: "runners", SecretName: "bb-oauth"},
			check: func(t *testing.T, p *v1alpha1.RunnerPool) {
				want(t, "name", p.Name, "arm-builds")
				want(t, "namespace", p.Namespace, "runners")
				want(t, "secret", p.Spec.Bitbucket.CredentialsSecretRef.Name, "bb-oauth")
				want(t, "max", itoa(p.Spec.MaxRunners), "3")
				pi := p.Spec.Scaling.PercentageIdle
				want(t, "thresholds", strings.Join([]string{string(pi.ScaleUpThreshold), string(pi.ScaleDownThreshold), string(pi.ScaleUpMultiplier), string(pi.ScaleDownMultiplier)}, " "), "0.5 0.1 2 0.25")
			},
		},
		{
			name: "the cool-down period becomes the scale-down delay; job memory picks the step size, CPU goes to docker",
			file: "constants:\n  runner_cool_down_period: 120\n  runner_api_polling_interval: 600\n" + group(`name: big
workspace: "`+workspaceUUID+`"
namespace: ci
strategy: percentageRunnersIdle
resources:
  requests: {memory: 5Gi, cpu: 500m}
  limits: {memory: 6Gi, cpu: "2"}
`+params),
			check: func(t *testing.T, p *v1alpha1.RunnerPool) {
				want(t, "scaleDownDelay", p.Spec.Scaling.ScaleDownDelay.Duration.String(), (2 * time.Minute).String())
				want(t, "pollInterval", p.Spec.Scaling.PollInterval.Duration.String(), "0s")
				want(t, "stepSize", string(p.Spec.Runner.StepSize), "2x")
				res := p.Spec.Docker.Resources
				if res == nil || !res.Requests.Cpu().Equal(resource.MustParse("500m")) || !res.Limits.Cpu().Equal(resource.MustParse("2")) {
					t.Errorf("docker resources %+v, want CPU 500m request and 2 limit", res)
				}
				if _, set := res.Requests["memory"]; set {
					t.Errorf("docker resources carry memory %v: the step size sets it", res.Requests)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := migrate.Convert([]byte(tt.file), tt.opts)
			if err != nil {
				t.Fatalf("Convert: %v\n%s", err, tt.file)
			}
			if len(res.Pools) != 1 {
				t.Fatalf("%d pools, want 1", len(res.Pools))
			}
			tt.check(t, res.Pools[0])
		})
	}
}

func TestConvertRefuses(t *testing.T) {
	base := `name: g
workspace: "` + workspaceUUID + `"
namespace: ci
strategy: percentageRunnersIdle
`
	tests := []struct {
		name, file, wantErr string
	}{
		{"no groups", "constants: {}\n", "no groups"},
		{"another strategy", group(strings.Replace(base, "percentageRunnersIdle", "queueLength", 1) + params), `strategy "queueLength"`},
		{"a workspace name without its UUID", group(strings.Replace(base, `"`+workspaceUUID+`"`, "acme", 1) + params), `--uuid acme=`},
		{"a label Bitbucket refuses", group(base + "labels: [Docker_Builds]\n" + params), `label "Docker_Builds"`},
		{"min above max", group(base + strings.Replace(params, "min: 1", "min: 9", 1)), "min 9 is above max 5"},
		{"max above Bitbucket's limit", group(base + strings.Replace(params, "max: 5", "max: 150", 1)), "1 to 100"},
		{"a missing threshold", group(base + strings.Replace(params, "  scaleDownThreshold: 0.2\n", "", 1)), "scaleDownThreshold is required"},
		{"thresholds the wrong way round", group(base + strings.Replace(params, "scaleDownThreshold: 0.2", "scaleDownThreshold: 0.9", 1)), "must be below scaleUpThreshold"},
		{"a multiplier that cannot scale up", group(base + strings.Replace(params, "scaleUpMultiplier: 1.5", "scaleUpMultiplier: 1", 1)), "scaleUpMultiplier 1 must be above 1"},
		{"two spellings that disagree", group(base + params + "\n  scale_up_threshold: 0.6"), "disagree"},
		{"a namespace Kubernetes refuses", group(strings.Replace(base, "namespace: ci", "namespace: CI_Runners", 1) + params), `namespace "CI_Runners"`},
		{"more memory than the largest step", group(base + "resources: {limits: {memory: 64Gi}}\n" + params), "above the 32Gi"},
		{"a ConfigMap without the file", "kind: ConfigMap\ndata: {other: x}\n", "no runners_config.yaml key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := migrate.Convert([]byte(tt.file), migrate.Options{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Convert error = %v, want one containing %q\n%s", err, tt.wantErr, tt.file)
			}
		})
	}
}

// The published format, as a file and inside the autoscaler's ConfigMap.
func TestConvertThePublishedFormat(t *testing.T) {
	for _, tt := range []struct {
		file      string
		wantPools []string
		wantNotes []string
	}{
		{
			file:      "testdata/runners_config.yaml",
			wantPools: []string{"ci-runners/runner-group-1", "ci-runners/runner-repository-group"},
			wantNotes: []string{"runner_api_polling_interval 600s is not copied", "job memory 6Gi -> stepSize 2x"},
		},
		{
			file:      "testdata/runners-autoscaler-cm.yaml",
			wantPools: []string{"builds/linux-builds"},
			wantNotes: []string{"runner_api_polling_interval 600s is not copied"},
		},
	} {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			res, err := migrate.Convert(data, migrate.Options{UUIDs: names})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range res.Pools {
				got = append(got, p.Namespace+"/"+p.Name)
			}
			want(t, "pools", strings.Join(got, " "), strings.Join(tt.wantPools, " "))
			notes := strings.Join(res.Notes, "\n")
			for _, n := range tt.wantNotes {
				if !strings.Contains(notes, n) {
					t.Errorf("notes lack %q:\n%s", n, notes)
				}
			}
			out, err := migrate.YAML(res.Pools)
			if err != nil {
				t.Fatal(err)
			}
			for _, absent := range []string{"status:", "creationTimestamp"} {
				if strings.Contains(string(out), absent) {
					t.Errorf("YAML carries %s:\n%s", absent, out)
				}
			}
			secrets := migrate.SecretCommands(res, "")
			for _, ns := range res.Namespaces {
				if !strings.Contains(secrets, "kubectl -n "+ns+" create secret generic bitbucket-credentials") {
					t.Errorf("no Secret command for namespace %s:\n%s", ns, secrets)
				}
			}
			if !strings.Contains(secrets, "clientId=") || !strings.Contains(secrets, "clientSecret=") {
				t.Errorf("Secret commands lack the OAuth keys:\n%s", secrets)
			}
		})
	}
}

func TestTwoGroupsWithOneNameGetTwoPools(t *testing.T) {
	body := strings.ReplaceAll(`name: builds
workspace: "`+workspaceUUID+`"
namespace: ci
strategy: percentageRunnersIdle
`+params, "\n", "\n    ")
	res, err := migrate.Convert([]byte("groups:\n  - "+body+"\n  - "+body+"\n"), migrate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Pools) != 2 || res.Pools[0].Name != "builds" || res.Pools[1].Name != "builds-2" {
		t.Errorf("pools %s and %s, want builds and builds-2", res.Pools[0].Name, res.Pools[len(res.Pools)-1].Name)
	}
}

func want(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func labelsOf(p *v1alpha1.RunnerPool) []string {
	var out []string
	for _, l := range p.Spec.Labels {
		out = append(out, string(l))
	}
	return out
}

func itoa(n int32) string { return resource.NewQuantity(int64(n), resource.DecimalSI).String() }
