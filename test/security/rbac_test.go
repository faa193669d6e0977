package security_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/operator"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

const chartDir = "charts/runnerpool-operator"

// knownRefusals are requests the chart's RBAC refuses although the operator makes them, by
// "verb group/resource", each with its fix. They are logged instead of failing the test; an
// entry whose request is no longer refused fails it, so that the entry goes with the fix.
var knownRefusals = map[string]string{}

// leaseName is the leader election Lease of internal/operator.
const leaseName = "runnerpool-operator.ci.runnerpool.dev"

// The operator does its whole job, a pool coming up with runners ONLINE and pods Running, then
// deleted without leaving anything behind, as the ServiceAccount the Helm chart creates, with
// exactly the RBAC the chart grants it and leader election on, in both of the chart's modes.
// Any request the API server refuses fails the test. Grants the run never used are logged:
// candidates for removal, or paths (failures, orphans) this run did not take.
func TestOperatorWorksWithExactlyTheChartRBAC(t *testing.T) {
	helm, kubectl := tool(t, "helm"), tool(t, "kubectl")
	sys := sharedSystem(t)

	tests := []struct {
		name      string
		release   string
		namespace string
		// watch is the chart's watchNamespaces; the pool lives in the first, or in
		// poolNamespace when the operator watches all namespaces.
		watch         []string
		poolNamespace string
		// ignored is a namespace outside watch, whose pools the operator must leave alone.
		ignored string
	}{
		{name: "ClusterRole", release: "rbac-cluster", namespace: "rbac-cluster-system", poolNamespace: "rbac-cluster-team"},
		{
			name: "Roles in watchNamespaces", release: "rbac-ns", namespace: "rbac-ns-system",
			watch: []string{"rbac-ns-team-a", "rbac-ns-team-b"}, poolNamespace: "rbac-ns-team-a", ignored: "rbac-ns-elsewhere",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			for _, ns := range append([]string{tt.namespace, tt.poolNamespace, tt.ignored}, tt.watch...) {
				if ns == "" {
					continue
				}
				if err := sys.CreateNamespace(ctx, ns); err != nil {
					t.Fatal(err)
				}
			}
			rendered := renderChartRBAC(t, helm, tt.release, tt.namespace, tt.watch)
			applyManifest(t, kubectl, sys.ControlPlane.KubeconfigPath, rendered.manifest)

			audit := &apiAudit{used: map[string]bool{}}
			cfg := rest.CopyConfig(sys.ControlPlane.Config)
			cfg.Impersonate = rest.ImpersonationConfig{
				UserName: "system:serviceaccount:" + rendered.serviceAccountNamespace + ":" + rendered.serviceAccount,
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + rendered.serviceAccountNamespace, "system:authenticated"},
			}
			cfg.Wrap(audit.wrap)
			var logs logBuffer
			stop := runOperator(t, sys, cfg, operator.Options{
				Logger:                  logs.logger(),
				Namespaces:              tt.watch,
				LeaderElect:             true,
				LeaderElectionNamespace: tt.namespace,
			})

			var ignoredPool *v1alpha1.RunnerPool
			if tt.ignored != "" {
				ignoredPool = harness.Pool(tt.ignored, "unwatched", 1, 1)
				if err := sys.Client.Create(ctx, ignoredPool); err != nil {
					t.Fatal(err)
				}
			}
			pool := harness.Pool(tt.poolNamespace, "rbac", 2, 3)
			pool.Spec.Scaling.IdleRunners = 0
			if err := sys.Client.Create(ctx, pool); err != nil {
				t.Fatal(err)
			}
			prefix := controllers.BitbucketNamePrefix(getPool(t, sys, pool.Namespace, pool.Name))
			inPool := client.MatchingLabels{v1alpha1.LabelPool: pool.Name}

			eventually(t, 45*time.Second, "2 runners ONLINE, their pods Running and the pool Ready", func() (bool, string) {
				total, online := onlineRunners(sys, prefix)
				var pods corev1.PodList
				if err := sys.Client.List(ctx, &pods, client.InNamespace(pool.Namespace), inPool); err != nil {
					return false, err.Error()
				}
				running := 0
				for _, p := range pods.Items {
					if p.Status.Phase == corev1.PodRunning {
						running++
					}
				}
				ready := meta.FindStatusCondition(getPool(t, sys, pool.Namespace, pool.Name).Status.Conditions, v1alpha1.ConditionReady)
				return online == 2 && running == 2 && ready != nil && ready.Status == "True",
					fmt.Sprintf("%d runners, %d ONLINE, %d pods Running, Ready %+v", total, online, running, ready)
			})
			if ignoredPool != nil {
				p := getPool(t, sys, ignoredPool.Namespace, ignoredPool.Name)
				var runners v1alpha1.RunnerList
				if err := sys.Client.List(ctx, &runners, client.InNamespace(ignoredPool.Namespace)); err != nil {
					t.Fatal(err)
				}
				if len(p.Finalizers) > 0 || p.Status.ObservedGeneration != 0 || len(runners.Items) > 0 {
					t.Errorf("the operator acted on a pool outside its namespaces: finalizers %v, observed generation %d, %d Runners",
						p.Finalizers, p.Status.ObservedGeneration, len(runners.Items))
				}
				if err := sys.Client.Delete(ctx, ignoredPool); err != nil {
					t.Fatal(err)
				}
			}

			if err := sys.Client.Delete(ctx, pool); err != nil {
				t.Fatal(err)
			}
			eventually(t, 60*time.Second, "the pool and everything it made to be gone", func() (bool, string) {
				err := sys.Client.Get(ctx, client.ObjectKeyFromObject(pool), &v1alpha1.RunnerPool{})
				left := map[string]int{}
				for what, list := range map[string]client.ObjectList{"Runners": &v1alpha1.RunnerList{}, "Secrets": &corev1.SecretList{}, "pods": &corev1.PodList{}} {
					if err := sys.Client.List(ctx, list, client.InNamespace(pool.Namespace), inPool); err != nil {
						return false, err.Error()
					}
					if n := meta.LenList(list); n > 0 {
						left[what] = n
					}
				}
				total, _ := onlineRunners(sys, prefix)
				if total > 0 {
					left["Bitbucket runners"] = total
				}
				return apierrors.IsNotFound(err) && len(left) == 0, fmt.Sprintf("pool: %v, left: %v", err, left)
			})

			var lease coordinationv1.Lease
			if err := sys.Client.Get(ctx, client.ObjectKey{Namespace: tt.namespace, Name: leaseName}, &lease); err != nil {
				t.Errorf("leader election Lease in %s: %v", tt.namespace, err)
			}
			stop()

			var unexpected []string
			for _, refusal := range audit.forbiddenRequests() {
				if fix, known := knownRefusals[refusal.access]; known {
					t.Logf("known RBAC gap: %s refused %s: %s", refusal.access, refusal.where, fix)
					continue
				}
				unexpected = append(unexpected, refusal.access+" "+refusal.where)
			}
			if len(unexpected) > 0 {
				t.Errorf("the API server refused %d requests of the operator:\n  %s", len(unexpected), strings.Join(unexpected, "\n  "))
			}
			for access := range knownRefusals {
				if !slices.ContainsFunc(audit.forbiddenRequests(), func(r refusal) bool { return r.access == access }) {
					t.Errorf("%s is no longer refused: remove it from knownRefusals", access)
				}
			}
			if text := strings.ToLower(logs.String()); strings.Contains(text, "forbidden") {
				t.Errorf("the operator logged a refusal:\n%s", linesContaining(logs.String(), "forbidden", 5))
			}
			if unused := unusedGrants(rendered.rules, audit.usedAccess()); len(unused) > 0 {
				t.Logf("granted but not used in this run (%d): %s", len(unused), strings.Join(unused, ", "))
			}
		})
	}
}

// chartRBAC is the part of the rendered chart that grants the manager its rights.
type chartRBAC struct {
	manifest                                []byte
	serviceAccount, serviceAccountNamespace string
	rules                                   []rbacv1.PolicyRule
}

// renderChartRBAC renders the chart as `helm install` would and keeps the ServiceAccount,
// (Cluster)Roles and their bindings: all the operator's identity and rights.
func renderChartRBAC(t *testing.T, helm, release, namespace string, watch []string) chartRBAC {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace}
	if len(watch) > 0 {
		args = append(args, "--set", "watchNamespaces={"+strings.Join(watch, ",")+"}")
	}
	out := runTool(t, "", helm, args...)

	var rbac chartRBAC
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read rendered chart: %v", err)
		}
		var object struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name        string            `json:"name"`
				Namespace   string            `json:"namespace"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal(doc, &object); err != nil {
			t.Fatalf("decode rendered document: %v", err)
		}
		if object.Metadata.Annotations["helm.sh/hook"] != "" {
			// The uninstall hook's own account and rights, not the manager's.
			continue
		}
		switch object.Kind {
		case "ServiceAccount":
			rbac.serviceAccount, rbac.serviceAccountNamespace = object.Metadata.Name, object.Metadata.Namespace
		case "ClusterRole", "Role":
			rbac.rules = append(rbac.rules, object.Rules...)
		case "ClusterRoleBinding", "RoleBinding":
		default:
			continue
		}
		rbac.manifest = append(rbac.manifest, []byte("---\n")...)
		rbac.manifest = append(rbac.manifest, doc...)
	}
	if rbac.serviceAccount == "" || len(rbac.rules) == 0 {
		t.Fatalf("the rendered chart has no ServiceAccount (%q) or no rules (%d)", rbac.serviceAccount, len(rbac.rules))
	}
	return rbac
}

func applyManifest(t *testing.T, kubectl, kubeconfig string, manifest []byte) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "rbac.yaml")
	if err := os.WriteFile(file, manifest, 0o600); err != nil {
		t.Fatal(err)
	}
	runTool(t, kubeconfig, kubectl, "apply", "-f", file)
}

// runTool runs helm or kubectl from the repository root, with helm's state in the test's
// temporary directory.
func runTool(t *testing.T, kubeconfig, program string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, program, args...)
	cmd.Dir = harness.RepoRoot()
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+kubeconfig,
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(program), strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// runOperator runs the operator in this process with cfg, as cmd/manager wires it, against the
// system's bbsim. The returned function stops it; the test's end does too.
func runOperator(t *testing.T, sys *harness.System, cfg *rest.Config, opts operator.Options) (stop func()) {
	t.Helper()
	opts.APIURL = sys.BBSimURL
	opts.TokenURL = sys.BBSimURL + "/site/oauth2/access_token"
	opts.Registry = prometheus.NewRegistry()
	opts.Timings = controllers.Timings{OrphanGrace: 3 * time.Second, OfflineGrace: 10 * time.Second}
	opts.SkipNameValidation = true
	mgr, err := operator.New(cfg, opts)
	if err != nil {
		t.Fatalf("build operator: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("operator: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// apiAudit records, from the operator's side of the wire, every API request it makes as an
// RBAC check would see it (verb, API group, resource and subresource), and every refusal.
type apiAudit struct {
	mu        sync.Mutex
	used      map[string]bool
	forbidden []refusal
}

// refusal is a request the API server answered 403.
type refusal struct {
	access string // "verb group/resource[/subresource]"
	where  string // "in <namespace>" or "cluster-wide"
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func (a *apiAudit) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(req)
		access, namespace, ok := accessOf(req)
		if !ok {
			return resp, err
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.used[access] = true
		if resp != nil && resp.StatusCode == http.StatusForbidden {
			where := "cluster-wide"
			if namespace != "" {
				where = "in " + namespace
			}
			if !slices.Contains(a.forbidden, refusal{access, where}) {
				a.forbidden = append(a.forbidden, refusal{access, where})
			}
		}
		return resp, err
	})
}

func (a *apiAudit) usedAccess() map[string]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	used := make(map[string]bool, len(a.used))
	for k := range a.used {
		used[k] = true
	}
	return used
}

func (a *apiAudit) forbiddenRequests() []refusal {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.forbidden)
}

// accessOf names a request as "verb group/resource[/subresource]" (the core group is empty),
// with its namespace. Discovery requests are not resource requests.
func accessOf(req *http.Request) (access, namespace string, ok bool) {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	var group string
	switch {
	case len(parts) > 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) > 3 && parts[0] == "apis":
		group, parts = parts[1], parts[3:]
	default:
		return "", "", false
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		namespace, parts = parts[1], parts[2:]
	}
	resource, name := parts[0], ""
	if len(parts) > 1 {
		name = parts[1]
	}
	if len(parts) > 2 {
		resource += "/" + parts[2]
	}
	var verb string
	switch req.Method {
	case http.MethodGet:
		switch {
		case name != "":
			verb = "get"
		case req.URL.Query().Get("watch") == "true" || req.URL.Query().Get("watch") == "1":
			verb = "watch"
		default:
			verb = "list"
		}
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		verb = "delete"
		if name == "" {
			verb = "deletecollection"
		}
	default:
		verb = strings.ToLower(req.Method)
	}
	return verb + " " + group + "/" + resource, namespace, true
}

// unusedGrants lists the granted "verb group/resource" the run never used. A watched resource
// counts as listed and read too: informers list through the watch (client-go's watch-list)
// and reads come from their cache, yet a reflector falls back to a plain list.
func unusedGrants(rules []rbacv1.PolicyRule, used map[string]bool) []string {
	var unused []string
	for _, rule := range rules {
		for _, group := range rule.APIGroups {
			for _, resource := range rule.Resources {
				watched := used["watch "+group+"/"+strings.Split(resource, "/")[0]]
				for _, verb := range rule.Verbs {
					access := verb + " " + group + "/" + resource
					if (verb == "get" || verb == "list") && watched {
						continue
					}
					if !used[access] && !slices.Contains(unused, access) {
						unused = append(unused, access)
					}
				}
			}
		}
	}
	slices.Sort(unused)
	return unused
}

// linesContaining returns up to limit lines of text that contain word.
func linesContaining(text, word string, limit int) string {
	var found []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(strings.ToLower(line), word) {
			found = append(found, line)
			if len(found) == limit {
				break
			}
		}
	}
	return strings.Join(found, "\n")
}
