package install_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/runnerpool/runnerpool-operator/hack/chart/valuesdoc"
)

const (
	releaseName      = "runnerpool-operator"
	releaseNamespace = "runnerpool-system"
)

// renderCases are the value sets of the golden files: testdata/NAME.yaml is the
// chart rendered with testdata/NAME.values.yaml (none for defaults).
var renderCases = []string{"defaults", "watch-namespaces", "webhook-ingress-servicemonitor", "monitoring", "plain-metrics-no-cleanup", "pool-policy", "high-availability"}

func valuesFile(name string) string {
	path := filepath.Join("testdata", name+".values.yaml")
	if _, err := os.Stat(path); err != nil {
		return ""
	}
	abs, _ := filepath.Abs(path)
	return abs
}

func helmTemplate(t *testing.T, helm string, args ...string) result {
	t.Helper()
	return run(t, commandEnv(t, ""), helm, append([]string{"template", releaseName, chartDir, "--namespace", releaseNamespace}, args...)...)
}

func TestChartLints(t *testing.T) {
	helm := tool(t, "helm")
	for _, name := range renderCases {
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir, "--namespace", releaseNamespace}
			if f := valuesFile(name); f != "" {
				args = append(args, "--values", f)
			}
			mustRun(t, commandEnv(t, ""), helm, args...)
		})
	}
}

func TestChartRendersGoldenFiles(t *testing.T) {
	helm := tool(t, "helm")
	for _, name := range renderCases {
		t.Run(name, func(t *testing.T) {
			var args []string
			if f := valuesFile(name); f != "" {
				args = append(args, "--values", f)
			}
			r := helmTemplate(t, helm, args...)
			if r.err != nil {
				t.Fatalf("helm template: %v\n%s", r.err, r.stderr)
			}
			golden := filepath.Join("testdata", name+".yaml")
			if *update {
				if err := os.WriteFile(golden, []byte(r.stdout), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./test/install -run TestChartRendersGoldenFiles -update)", err)
			}
			if r.stdout != string(want) {
				t.Errorf("helm template differs from %s; if the change is intended, run go test ./test/install -run TestChartRendersGoldenFiles -update and review the diff\n%s",
					golden, firstDifference(string(want), r.stdout))
			}
		})
	}
}

// firstDifference shows where two renderings part, a few lines of each.
func firstDifference(want, got string) string {
	wantLines, gotLines := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wantLines) || i < len(gotLines); i++ {
		if i < len(wantLines) && i < len(gotLines) && wantLines[i] == gotLines[i] {
			continue
		}
		window := func(lines []string) string {
			end := min(i+5, len(lines))
			if i >= end {
				return "(end)"
			}
			return strings.Join(lines[i:end], "\n")
		}
		return "line " + strconv.Itoa(i+1) + ", want:\n" + window(wantLines) + "\ngot:\n" + window(gotLines)
	}
	return ""
}

func TestChartRejectsBadValues(t *testing.T) {
	helm := tool(t, "helm")
	tests := []struct {
		name    string
		args    []string
		wantErr string // empty: the values are accepted
	}{
		{"zero replicas", []string{"--set", "replicas=0"}, "at '/replicas': minimum"},
		{"fractional replicas", []string{"--set-json", "replicas=1.5"}, "at '/replicas'"},
		{"numeric image tag", []string{"--set", "image.tag=123"}, "at '/image/tag'"},
		{"namespace that is no DNS label", []string{"--set", "watchNamespaces={Team_A}"}, "at '/watchNamespaces/0'"},
		{"namespace listed twice", []string{"--set", "watchNamespaces={a,a}"}, "at '/watchNamespaces'"},
		{"misspelt value", []string{"--set", "replica=2"}, "additional properties 'replica' not allowed"},
		{"unknown log level", []string{"--set", "logLevel=verbose"}, "at '/logLevel'"},
		{"extra argument that is no flag", []string{"--set", "extraArgs={verbose}"}, "at '/extraArgs/0'"},
		{"port out of range", []string{"--set", "metrics.service.port=70000"}, "at '/metrics/service/port'"},
		{"two webhook secrets", []string{"--set", "webhook.enabled=true,webhook.secret.existingSecret=s,webhook.secret.value=v"}, "set existingSecret or value, not both"},
		{"ingress without receiver", []string{"--set", "webhook.ingress.enabled=true,webhook.ingress.hosts={a.example.com}"}, "needs webhook.enabled"},
		{"ingress without host", []string{"--set", "webhook.enabled=true,webhook.ingress.enabled=true"}, "name at least one host"},
		{"webhook receiver without a secret", []string{"--set", "webhook.enabled=true"}, "the webhook receiver needs a secret"},
		{"webhook Ingress without a secret", []string{"--set", "webhook.enabled=true,webhook.ingress.enabled=true,webhook.ingress.hosts={a.example.com}"}, "the webhook receiver needs a secret"},
		{"unknown alert to disable", []string{"--set", "prometheusRule.disabled={RunnerPoolTypo}"}, "at '/prometheusRule/disabled/0'"},
		{"alert duration without unit", []string{"--set", "prometheusRule.for.podsPending=10"}, "at '/prometheusRule/for/podsPending'"},
		{"empty alert duration", []string{"--set", "prometheusRule.for.podsPending="}, "at '/prometheusRule/for/podsPending'"},
		{"error ratio above 1", []string{"--set", "prometheusRule.bitbucketErrorRatio=1.5"}, "at '/prometheusRule/bitbucketErrorRatio'"},
		{"selector with braces", []string{"--set-json", `prometheusRule.selector="{job=\"x\"}"`}, "at '/prometheusRule/selector': '{job=\"x\"}' does not match pattern"},
		{"dashboard namespace that is no DNS label", []string{"--set", "grafanaDashboard.namespace=Monitoring"}, "at '/grafanaDashboard/namespace'"},

		{"cleanup timeout of zero", []string{"--set", "cleanup.timeoutSeconds=0"}, "at '/cleanup/timeoutSeconds'"},
		{"cleanup timeout as a duration", []string{"--set", "cleanup.timeoutSeconds=5m"}, "at '/cleanup/timeoutSeconds'"},
		{"cleanup image without tag", []string{"--set", "cleanup.image.tag="}, "at '/cleanup/image/tag'"},
		{"metrics secure not a boolean", []string{"--set-string", "metrics.secure=yes"}, "at '/metrics/secure'"},
		{"policy action Deny with Warn", []string{"--set", "poolPolicy.enabled=true,poolPolicy.validationActions={Deny,Warn}"}, "Deny and Warn cannot go together"},
		{"unknown policy action", []string{"--set", "poolPolicy.validationActions={Block}"}, "at '/poolPolicy/validationActions/0'"},
		{"no policy action", []string{"--set-json", "poolPolicy.validationActions=[]"}, "at '/poolPolicy/validationActions'"},
		{"unknown docker mode", []string{"--set", "poolPolicy.allowedDockerModes={Sandboxed}"}, "at '/poolPolicy/allowedDockerModes/0'"},
		{"no docker mode", []string{"--set-json", "poolPolicy.allowedDockerModes=[]"}, "at '/poolPolicy/allowedDockerModes'"},
		{"allowed image with a space", []string{"--set-json", `poolPolicy.allowedImages=["docker: dind"]`}, "at '/poolPolicy/allowedImages/0'"},
		{"ServiceAccount that is no name", []string{"--set", "poolPolicy.allowedServiceAccounts={Builder}"}, "at '/poolPolicy/allowedServiceAccounts/0'"},
		{"Bitbucket URL that is no URL", []string{"--set", "poolPolicy.allowedBitbucketURLs={bitbucket.example.com}"}, "at '/poolPolicy/allowedBitbucketURLs/0'"},
		{"namespace selector with a typo", []string{"--set", "poolPolicy.namespaceSelector.matchLabel.a=b"}, "additional properties 'matchLabel' not allowed"},

		{"ServiceMonitor that cannot verify the self-signed certificate", []string{"--set", "metrics.serviceMonitor.enabled=true"}, "metrics.serviceMonitor: Prometheus cannot verify the self-signed certificate"},
		{"ServiceMonitor skip verify not a boolean", []string{"--set-string", "metrics.serviceMonitor.insecureSkipVerify=yes"}, "at '/metrics/serviceMonitor/insecureSkipVerify'"},

		{"disruption budget that blocks every eviction", []string{"--set", "podDisruptionBudget.enabled=true"}, "podDisruptionBudget: minAvailable must be below replicas"},
		{"disruption budget with no pod to spare", []string{"--set", "podDisruptionBudget.enabled=true,podDisruptionBudget.maxUnavailable=0"}, "podDisruptionBudget: maxUnavailable 0"},
		{"disruption budget of a word", []string{"--set", "podDisruptionBudget.maxUnavailable=one"}, "at '/podDisruptionBudget/maxUnavailable'"},
		{"allowed host with a scheme", []string{"--set", "bitbucket.allowedHosts={https://bitbucket.example.com}"}, "at '/bitbucket/allowedHosts/0'"},
		{"extra volume named like the chart's", []string{"--set-json", `extraVolumes=[{"name":"webhook-secret","emptyDir":{}}]`}, "at '/extraVolumes/0/name'"},
		{"extra mount over the chart's directory", []string{"--set-json", `extraVolumeMounts=[{"name":"x","mountPath":"/etc/runnerpool-operator/webhook"}]`}, "at '/extraVolumeMounts/0/mountPath'"},
		{"extra env without a name", []string{"--set-json", `extraEnv=[{"value":"x"}]`}, "at '/extraEnv/0'"},
		{"topology spread without a key", []string{"--set-json", `topologySpreadConstraints=[{"maxSkew":1}]`}, "at '/topologySpreadConstraints/0'"},

		{"two replicas", []string{"--set", "replicas=2"}, ""},
		{"disruption budget with one replica and maxUnavailable", []string{"--set", "podDisruptionBudget.enabled=true,podDisruptionBudget.maxUnavailable=1"}, ""},
		{"disruption budget as a percentage", []string{"--set", "replicas=3,podDisruptionBudget.enabled=true,podDisruptionBudget.minAvailable=50%"}, ""},
		{"ServiceMonitor verifying against the metrics certificate's CA", []string{"--set", "metrics.serviceMonitor.enabled=true,metrics.certSecret=metrics-tls"}, ""},
		{"ServiceMonitor verifying against another CA", []string{"--set", "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.caSecret.name=corp-ca"}, ""},
		{"ServiceMonitor skipping verification when asked", []string{"--set", "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.insecureSkipVerify=true"}, ""},
		{"ServiceMonitor with plain HTTP metrics", []string{"--set", "metrics.serviceMonitor.enabled=true,metrics.secure=false"}, ""},
		{"plain HTTP metrics", []string{"--set", "metrics.secure=false"}, ""},
		{"metrics certificate", []string{"--set", "metrics.certSecret=metrics-tls"}, ""},
		{"no cleanup on uninstall", []string{"--set", "cleanupOnUninstall=false"}, ""},
		{"numeric log level", []string{"--set", "logLevel=3"}, ""},
		{"numeric image tag as a string", []string{"--set-string", "image.tag=123"}, ""},
		{"existing webhook secret", []string{"--set", "webhook.enabled=true,webhook.secret.existingSecret=bitbucket-webhook"}, ""},
		{"unsigned webhook receiver when asked", []string{"--set", "webhook.enabled=true,webhook.allowUnsigned=true"}, ""},
		{"policy in Warn and Audit mode", []string{"--set", "poolPolicy.enabled=true,poolPolicy.validationActions={Warn,Audit}"}, ""},
		{"policy allowing any ServiceAccount and Bitbucket URL", []string{"--set", "poolPolicy.enabled=true,poolPolicy.allowedServiceAccounts={*},poolPolicy.allowedBitbucketURLs={*}"}, ""},
		{"alerts with one left out", []string{"--set", "prometheusRule.enabled=true,prometheusRule.disabled={RunnerPoolWebhookBadSignatures}"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := helmTemplate(t, helm, tt.args...)
			switch {
			case tt.wantErr == "" && r.err != nil:
				t.Fatalf("helm template %v failed: %v\n%s", tt.args, r.err, r.stderr)
			case tt.wantErr != "" && r.err == nil:
				t.Fatalf("helm template %v succeeded, want an error containing %q", tt.args, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(r.stderr, tt.wantErr):
				t.Fatalf("helm template %v error:\n%s\nwant it to contain %q", tt.args, r.stderr, tt.wantErr)
			}
		})
	}
}

// The chart's RBAC must be exactly what controller-gen generated from the
// controllers' markers, in both modes, and its leader election rules those of
// config/rbac.
func TestChartRBACMatchesGeneratedRole(t *testing.T) {
	helm := tool(t, "helm")
	generated := rulesOf(t, readRepoFile(t, "config/rbac/role.yaml"))
	leaderElection := rulesOf(t, readRepoFile(t, "config/rbac/leader_election_role.yaml"))
	metricsAuth := rulesOf(t, readRepoFile(t, "config/rbac/metrics_auth/role.yaml"))

	tests := []struct {
		name          string
		args          []string
		wantManagerIn []string // namespaces of manager Roles; nil: a ClusterRole
	}{
		{name: "all namespaces"},
		{name: "some namespaces", args: []string{"--set", "watchNamespaces={team-a,team-b}"}, wantManagerIn: []string{"team-a", "team-b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := helmTemplate(t, helm, tt.args...)
			if r.err != nil {
				t.Fatalf("helm template: %v\n%s", r.err, r.stderr)
			}
			var clusterRoles []rbacv1.ClusterRole
			var managerRoleNamespaces []string
			leaderElectionRoles, metricsAuthRoles := 0, 0
			for _, doc := range splitDocuments(t, []byte(r.stdout)) {
				var meta struct{ Kind string }
				if err := yaml.Unmarshal(doc, &meta); err != nil {
					t.Fatal(err)
				}
				switch meta.Kind {
				case "ClusterRole":
					var role rbacv1.ClusterRole
					if err := yaml.Unmarshal(doc, &role); err != nil {
						t.Fatal(err)
					}
					switch {
					case strings.HasSuffix(role.Name, "-metrics-auth"):
						metricsAuthRoles++
						if !reflect.DeepEqual(role.Rules, metricsAuth) {
							t.Errorf("metrics auth rules differ from config/rbac/metrics_auth/role.yaml (run make chart-sync):\n%+v", role.Rules)
						}
						continue
					case strings.HasSuffix(role.Name, "-metrics-reader"), strings.HasSuffix(role.Name, "-cleanup"):
						continue
					}
					clusterRoles = append(clusterRoles, role)
				case "Role":
					var role rbacv1.Role
					if err := yaml.Unmarshal(doc, &role); err != nil {
						t.Fatal(err)
					}
					if strings.HasSuffix(role.Name, "-cleanup") {
						continue
					}
					if strings.HasSuffix(role.Name, "-leader-election") {
						leaderElectionRoles++
						if role.Namespace != releaseNamespace {
							t.Errorf("leader election Role in %q, want the release namespace %q", role.Namespace, releaseNamespace)
						}
						if !reflect.DeepEqual(role.Rules, leaderElection) {
							t.Errorf("leader election rules differ from config/rbac/leader_election_role.yaml (run make chart-sync):\n%+v", role.Rules)
						}
						continue
					}
					managerRoleNamespaces = append(managerRoleNamespaces, role.Namespace)
					if !reflect.DeepEqual(role.Rules, generated) {
						t.Errorf("Role %s/%s rules differ from config/rbac/role.yaml (run make chart-sync):\n%+v", role.Namespace, role.Name, role.Rules)
					}
				}
			}
			if leaderElectionRoles != 1 {
				t.Errorf("%d leader election Roles, want 1", leaderElectionRoles)
			}
			// Secure metrics are the default, in both modes a ClusterRole.
			if metricsAuthRoles != 1 {
				t.Errorf("%d metrics auth ClusterRoles, want 1", metricsAuthRoles)
			}
			if tt.wantManagerIn == nil {
				if len(clusterRoles) != 1 || len(managerRoleNamespaces) != 0 {
					t.Fatalf("%d ClusterRoles and manager Roles in %v, want one ClusterRole and no Role", len(clusterRoles), managerRoleNamespaces)
				}
				if !reflect.DeepEqual(clusterRoles[0].Rules, generated) {
					t.Errorf("ClusterRole rules differ from config/rbac/role.yaml (run make chart-sync):\n%+v", clusterRoles[0].Rules)
				}
				return
			}
			if len(clusterRoles) != 0 {
				t.Errorf("%d ClusterRoles with watchNamespaces set, want none", len(clusterRoles))
			}
			if !reflect.DeepEqual(managerRoleNamespaces, tt.wantManagerIn) {
				t.Errorf("manager Roles in %v, want %v", managerRoleNamespaces, tt.wantManagerIn)
			}
		})
	}
}

func rulesOf(t *testing.T, manifest []byte) []rbacv1.PolicyRule {
	t.Helper()
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(manifest, &role); err != nil {
		t.Fatal(err)
	}
	if len(role.Rules) == 0 {
		t.Fatal("role has no rules")
	}
	return role.Rules
}

func splitDocuments(t *testing.T, stream []byte) [][]byte {
	t.Helper()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var docs [][]byte
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

// The chart carries copies of files that controller-gen and config/ own; make
// chart-sync refreshes them.
func TestChartCopiesAreInSync(t *testing.T) {
	pairs := map[string]string{
		"config/rbac/role.yaml":                 chartDir + "/files/rbac/role.yaml",
		"config/rbac/leader_election_role.yaml": chartDir + "/files/rbac/leader_election_role.yaml",
		"config/rbac/metrics_auth/role.yaml":    chartDir + "/files/rbac/metrics_auth_role.yaml",
	}
	sources, err := filepath.Glob(repoPath("config/crd/bases/*.yaml"))
	if err != nil || len(sources) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	for _, src := range sources {
		pairs["config/crd/bases/"+filepath.Base(src)] = chartDir + "/crds/" + filepath.Base(src)
	}
	copies, _ := filepath.Glob(repoPath(chartDir + "/crds/*"))
	if len(copies) != len(sources) {
		t.Errorf("%s/crds has %d files, config/crd/bases %d: run make chart-sync", chartDir, len(copies), len(sources))
	}
	for src, dst := range pairs {
		if !bytes.Equal(readRepoFile(t, src), readRepoFile(t, dst)) {
			t.Errorf("%s differs from %s: run make chart-sync", dst, src)
		}
	}
}

func TestChartREADMEValuesTableIsUpToDate(t *testing.T) {
	readme := readRepoFile(t, chartDir+"/README.md")
	want, err := valuesdoc.Render(readme, readRepoFile(t, chartDir+"/values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readme, want) {
		t.Errorf("%s/README.md values table is stale: run make chart-sync", chartDir)
	}
}
