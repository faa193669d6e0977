package install_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/operator"
	"github.com/runnerpool/runnerpool-operator/test/framework"
)

const (
	// runnerTaint keeps the manager and hook pods off the kwok nodes, where nothing really
	// runs: the pool's runner pods tolerate it, the operator's pods do not, so they land on
	// the local kubelet's node.
	runnerTaint = "runnerpool.dev/test-runners"
	// longCommandTimeout bounds a helm or kubectl run that waits for pods.
	longCommandTimeout = 3 * time.Minute
)

// running is a control plane where installed pods run: the Deployment, ReplicaSet and Job
// controllers make them, a local kubelet runs the operator's and the cleanup hook's as
// bin/manager and bin/kubectl processes with the pod's ServiceAccount, kwok nodes take the
// runner pods and bbsim plays Bitbucket and its runner agents.
type running struct {
	env       []string
	helm      string
	kubectl   string
	cp        *framework.ControlPlane
	clientset kubernetes.Interface
	client    client.Client
	kubelet   *framework.Kubelet
	bbsim     *bbsim.Server
	bbsimURL  string
}

// The operator installed the way a user installs it, then really running: with the chart
// (install, a pool served, upgrade, uninstall) and with the bundle (apply, a pool served,
// delete). Uninstalling leaves no runner registered in Bitbucket.
func TestInstalledOperatorServesPools(t *testing.T) {
	r := &running{helm: tool(t, "helm"), kubectl: tool(t, "kubectl")}
	manager := buildManager(t)
	r.start(t, framework.Options{Nodes: -1})
	ctx := t.Context()
	var err error
	r.kubelet, err = r.cp.StartKubelet(ctx, framework.KubeletOptions{
		NodeName: "local-kubelet",
		Programs: map[string]string{
			"ghcr.io/runnerpool/runnerpool-operator": manager,
			"registry.k8s.io/kubectl":                r.kubectl,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pods run by the local kubelet:\n%s", r.kubelet.LogTail(40))
		}
		r.kubelet.Stop()
	})
	r.startBBSim(t)

	t.Run("helm chart: install, serve a pool, upgrade, uninstall", r.helmLifecycle)
	t.Run("kubectl bundle: apply, serve a pool, delete", r.bundleLifecycle)
}

// buildManager builds cmd/manager as `make build` does, into the test's directory: a
// bin/manager left from an older checkout would test something else.
func buildManager(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "manager")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/manager")
	cmd.Dir = repoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/manager: %v\n%s", err, b)
	}
	return out
}

func (r *running) startBBSim(t *testing.T) {
	r.startBBSimOn(t, "127.0.0.1")
}

// start brings up the control plane of opts for r, its clients, the workload controllers and
// two kwok nodes tainted for runner pods.
func (r *running) start(t *testing.T, opts framework.Options) {
	t.Helper()
	r.cp = framework.StartForTest(t, opts)
	r.env = commandEnv(t, r.cp.KubeconfigPath)
	var err error
	if r.clientset, err = kubernetes.NewForConfig(r.cp.Config); err != nil {
		t.Fatal(err)
	}
	if r.client, err = client.New(r.cp.Config, client.Options{Scheme: operator.Scheme()}); err != nil {
		t.Fatal(err)
	}
	if err := r.cp.StartWorkloadControllers(); err != nil {
		t.Fatal(err)
	}
	taint := func(node *corev1.Node) {
		node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: runnerTaint, Effect: corev1.TaintEffectNoSchedule})
	}
	if _, err := r.cp.CreateNodes(t.Context(), 2, resource.MustParse("16"), resource.MustParse("64Gi"), taint); err != nil {
		t.Fatal(err)
	}
}

func (r *running) helmLifecycle(t *testing.T) {
	const (
		release   = "rp"
		namespace = "rp-system"
		team      = "team-a"
		fullname  = "rp-runnerpool-operator"
	)
	ctx := t.Context()
	r.createNamespace(t, namespace, true)
	r.createNamespace(t, team, false)

	r.mustRunLong(t, r.helm, "install", release, chartDir, "--namespace", namespace,
		"--set", "bitbucket.apiURL="+r.bbsimURL,
		"--set", "bitbucket.tokenURL="+r.bbsimURL+"/site/oauth2/access_token",
		"--wait", "--timeout", "2m")
	first := r.managerPod(t, namespace, release)
	r.checkSecureMetrics(t, namespace, first, fullname)

	pool := r.applySamplePool(t, team)
	r.waitServed(t, pool, 1)

	// Narrowing the operator to the pool's namespace rolls the manager pod and swaps its
	// ClusterRole for a Role there: the old process goes, a new one takes over the lease and
	// keeps serving the pool, and the uninstall below runs the namespaced cleanup hook.
	r.mustRunLong(t, r.helm, "upgrade", release, chartDir, "--namespace", namespace, "--reuse-values",
		"--set", "watchNamespaces={"+team+"}", "--set", "logLevel=debug", "--wait", "--timeout", "2m")
	second := r.managerPod(t, namespace, release)
	if second == first {
		t.Fatalf("manager pod %s was not replaced by the upgrade", first)
	}
	r.waitPodGone(t, namespace, first)
	r.scalePool(t, pool, 2)
	r.waitServed(t, pool, 2)

	// The pre-delete hook deletes the pools while the manager still runs, so their runners
	// are drained and unregistered before the manager goes.
	r.mustRunLong(t, r.helm, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "3m")
	r.checkNothingLeft(t, team)
	if !slices.ContainsFunc(r.kubelet.StartedPods(), func(p string) bool { return strings.HasPrefix(p, namespace+"/"+fullname+"-cleanup-") }) {
		t.Errorf("the cleanup hook's pod never ran; pods run: %v", r.kubelet.StartedPods())
	}
	for what, get := range map[string]func() error{
		"manager Deployment": func() error {
			_, err := r.clientset.AppsV1().Deployments(namespace).Get(ctx, fullname, metav1.GetOptions{})
			return err
		},
		"cleanup Job": func() error {
			_, err := r.clientset.BatchV1().Jobs(namespace).Get(ctx, fullname+"-cleanup", metav1.GetOptions{})
			return err
		},
		"cleanup ServiceAccount": func() error {
			_, err := r.clientset.CoreV1().ServiceAccounts(namespace).Get(ctx, fullname+"-cleanup", metav1.GetOptions{})
			return err
		},
		"cleanup Role": func() error {
			_, err := r.clientset.RbacV1().Roles(team).Get(ctx, fullname+"-cleanup", metav1.GetOptions{})
			return err
		},
	} {
		r.waitGone(t, what, get)
	}
	r.waitNoPods(t, namespace)
}

func (r *running) bundleLifecycle(t *testing.T) {
	const (
		namespace = "runnerpool-system"
		team      = "team-b"
		name      = "runnerpool-operator"
	)
	r.createNamespace(t, team, false)

	r.mustRunLong(t, r.kubectl, "apply", "--server-side", "-f", installYAML)
	r.mustRunLong(t, r.kubectl, "--namespace", namespace, "rollout", "status", "deployment/"+name, "--timeout=2m")
	// The bundle talks to bitbucket.org; as a kustomize overlay would, point it at bbsim
	// before any pool exists, so nothing ever leaves this machine.
	patch := fmt.Sprintf(`[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--bitbucket-api-url=%s"},`+
		`{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--bitbucket-token-url=%s/site/oauth2/access_token"}]`, r.bbsimURL, r.bbsimURL)
	r.mustRunLong(t, r.kubectl, "--namespace", namespace, "patch", "deployment", name, "--type=json", "--patch", patch)
	r.mustRunLong(t, r.kubectl, "--namespace", namespace, "rollout", "status", "deployment/"+name, "--timeout=2m")
	pod := r.managerPod(t, namespace, "")
	r.checkSecureMetrics(t, namespace, pod, name)

	pool := r.applySamplePool(t, team)
	r.waitServed(t, pool, 1)

	// As the README says: the pools first, while the manager runs, then the bundle.
	r.mustRunLong(t, r.kubectl, "delete", "runnerpools.ci.runnerpool.dev", "--all", "--all-namespaces", "--wait", "--timeout=2m")
	r.checkNothingLeft(t, team)
	// Without a namespace controller here the namespace never finishes terminating.
	r.mustRunLong(t, r.kubectl, "delete", "-f", installYAML, "--wait=false")
	r.waitNoPods(t, namespace)
}

func (r *running) createNamespace(t *testing.T, name string, restricted bool) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if restricted {
		ns.Labels = map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}
	}
	if _, err := r.clientset.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// applySamplePool applies config/samples (the credentials Secret and the RunnerPool) to
// namespace with kubectl; its runner pods tolerate the kwok nodes' taint.
func (r *running) applySamplePool(t *testing.T, namespace string) *v1alpha1.RunnerPool {
	t.Helper()
	var pool v1alpha1.RunnerPool
	if err := yaml.Unmarshal(readRepoFile(t, "config/samples/runnerpool.yaml"), &pool); err != nil {
		t.Fatal(err)
	}
	pool.Namespace = namespace
	pool.Spec.Template.Tolerations = append(pool.Spec.Template.Tolerations, corev1.Toleration{Key: runnerTaint, Operator: corev1.TolerationOpExists})
	poolYAML, err := yaml.Marshal(&pool)
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir(): kubectl splits -f on the commas of the test's name.
	dir, err := os.MkdirTemp("", "runnerpool-samples-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	secretFile, poolFile := filepath.Join(dir, "credentials.yaml"), filepath.Join(dir, "pool.yaml")
	if err := os.WriteFile(secretFile, readRepoFile(t, "config/samples/bitbucket-credentials.yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(poolFile, poolYAML, 0o600); err != nil {
		t.Fatal(err)
	}
	r.mustRunLong(t, r.kubectl, "apply", "--namespace", namespace, "-f", secretFile, "-f", poolFile)
	return &pool
}

func (r *running) scalePool(t *testing.T, pool *v1alpha1.RunnerPool, minRunners int) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"minRunners":%d}}`, minRunners)
	r.mustRunLong(t, r.kubectl, "--namespace", pool.Namespace, "patch", "runnerpools.ci.runnerpool.dev/"+pool.Name, "--type=merge", "--patch", patch)
}

// waitServed waits until the pool is Ready with at least want runners ONLINE in bbsim.
func (r *running) waitServed(t *testing.T, pool *v1alpha1.RunnerPool, want int) {
	t.Helper()
	r.eventually(t, 90*time.Second, fmt.Sprintf("pool %s/%s Ready with %d runners ONLINE", pool.Namespace, pool.Name, want), func() (bool, string) {
		var current v1alpha1.RunnerPool
		if err := r.client.Get(t.Context(), client.ObjectKeyFromObject(pool), &current); err != nil {
			return false, err.Error()
		}
		ready := meta.FindStatusCondition(current.Status.Conditions, v1alpha1.ConditionReady)
		total, online := r.bbsimRunners()
		return ready != nil && ready.Status == metav1.ConditionTrue && online >= want,
			fmt.Sprintf("Ready %+v, %d runners in bbsim, %d ONLINE", ready, total, online)
	})
}

// checkNothingLeft waits until no RunnerPool, Runner or runner pod is left in namespace and
// no runner is registered in bbsim.
func (r *running) checkNothingLeft(t *testing.T, namespace string) {
	t.Helper()
	r.eventually(t, 90*time.Second, "no pool, Runner, runner pod or Bitbucket runner left", func() (bool, string) {
		left := map[string]int{}
		for what, list := range map[string]client.ObjectList{"RunnerPools": &v1alpha1.RunnerPoolList{}, "Runners": &v1alpha1.RunnerList{}, "pods": &corev1.PodList{}} {
			if err := r.client.List(t.Context(), list, client.InNamespace(namespace)); err != nil {
				return false, err.Error()
			}
			if n := meta.LenList(list); n > 0 {
				left[what] = n
			}
		}
		if total, _ := r.bbsimRunners(); total > 0 {
			left["Bitbucket runners"] = total
		}
		return len(left) == 0, fmt.Sprintf("left: %v", left)
	})
}

func (r *running) bbsimRunners() (total, online int) {
	for _, runner := range r.bbsim.State().Runners {
		total++
		if runner.Status == "ONLINE" {
			online++
		}
	}
	return total, online
}

// managerPod returns the name of the one running, ready manager pod in namespace, waiting
// for the rollout to settle; release narrows it to a Helm release's.
func (r *running) managerPod(t *testing.T, namespace, release string) string {
	t.Helper()
	selector := "app.kubernetes.io/name=runnerpool-operator"
	if release != "" {
		selector += ",app.kubernetes.io/instance=" + release
	}
	var name string
	r.eventually(t, 60*time.Second, "one ready manager pod in "+namespace, func() (bool, string) {
		pods, err := r.clientset.CoreV1().Pods(namespace).List(t.Context(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		for _, p := range pods.Items {
			states = append(states, fmt.Sprintf("%s %s deleting=%v ready=%v", p.Name, p.Status.Phase, p.DeletionTimestamp != nil, podReady(&p)))
		}
		if len(pods.Items) != 1 || !podReady(&pods.Items[0]) || pods.Items[0].DeletionTimestamp != nil {
			return false, strings.Join(states, "; ")
		}
		if r.kubelet != nil {
			if _, ok := r.kubelet.Ports(namespace, pods.Items[0].Name); !ok {
				return false, pods.Items[0].Name + " is not run by the local kubelet"
			}
		}
		name = pods.Items[0].Name
		return true, ""
	})
	return name
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// checkSecureMetrics scrapes the manager's metrics endpoint as Prometheus would: HTTPS, with
// the token of a ServiceAccount bound to the metrics-reader ClusterRole. No token, or the
// token of an account without the binding, is refused.
func (r *running) checkSecureMetrics(t *testing.T, namespace, pod, fullname string) {
	t.Helper()
	ctx := t.Context()
	url := r.metricsURL(t, namespace, pod)
	token := func(account string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: account, Namespace: namespace}}
		if _, err := r.clientset.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		tr, err := r.clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, account, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("token of %s: %v", account, err)
		}
		return tr.Status.Token
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-" + fullname},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: fullname + "-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "prometheus", Namespace: namespace}},
	}
	if _, err := r.clientset.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.clientset.RbacV1().ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
	})
	scraper := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		// The manager's certificate is self-signed, as the chart's ServiceMonitor expects.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // this machine's own, self-signed
	}}
	scrape := func(bearer string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := scraper.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	tests := []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a token the API server never issued", "not-a-token", http.StatusUnauthorized},
		{"an account without the metrics-reader binding", token("builder"), http.StatusForbidden},
		{"Prometheus bound to metrics-reader", token("prometheus"), http.StatusOK},
	}
	for _, tt := range tests {
		// RBAC takes a moment to reach the authorizer's cache after the binding is created.
		r.eventually(t, 20*time.Second, fmt.Sprintf("metrics with %s answering %d", tt.name, tt.want), func() (bool, string) {
			code, body := scrape(tt.token)
			if code == http.StatusOK && !strings.Contains(body, "controller_runtime_reconcile_total") {
				return false, "200 without the controller metrics"
			}
			return code == tt.want, fmt.Sprintf("status %d: %.200s", code, body)
		})
	}
}

// metricsURL is where the manager pod's metrics port answers from this process: a loopback
// port of the local kubelet, or the pod's own address on the real node's bridge.
func (r *running) metricsURL(t *testing.T, namespace, pod string) string {
	t.Helper()
	if r.kubelet != nil {
		ports, ok := r.kubelet.Ports(namespace, pod)
		if !ok {
			t.Fatalf("manager pod %s is not running here", pod)
		}
		return fmt.Sprintf("https://127.0.0.1:%d/metrics", ports["metrics"])
	}
	p, err := r.clientset.CoreV1().Pods(namespace).Get(t.Context(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "metrics" {
				return fmt.Sprintf("https://%s/metrics", net.JoinHostPort(p.Status.PodIP, fmt.Sprint(port.ContainerPort)))
			}
		}
	}
	t.Fatalf("manager pod %s declares no metrics port", pod)
	return ""
}

func (r *running) waitPodGone(t *testing.T, namespace, name string) {
	t.Helper()
	r.waitGone(t, "pod "+name, func() error {
		_, err := r.clientset.CoreV1().Pods(namespace).Get(t.Context(), name, metav1.GetOptions{})
		return err
	})
	if r.kubelet == nil {
		return
	}
	if _, ok := r.kubelet.Ports(namespace, name); ok {
		t.Errorf("the local kubelet still runs deleted pod %s", name)
	}
}

func (r *running) waitNoPods(t *testing.T, namespace string) {
	t.Helper()
	r.eventually(t, 60*time.Second, "no pod left in "+namespace, func() (bool, string) {
		pods, err := r.clientset.CoreV1().Pods(namespace).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var names []string
		for _, p := range pods.Items {
			names = append(names, p.Name)
		}
		return len(names) == 0, strings.Join(names, ", ")
	})
}

func (r *running) waitGone(t *testing.T, what string, get func() error) {
	t.Helper()
	r.eventually(t, 60*time.Second, what+" to be gone", func() (bool, string) {
		err := get()
		return apierrors.IsNotFound(err), fmt.Sprintf("last error: %v", err)
	})
}

func (r *running) eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	framework.Eventually(t, timeout, what, cond)
}

// mustRunLong runs helm or kubectl like mustRun, with room for the waits of a rollout.
func (r *running) mustRunLong(t *testing.T, program string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), longCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, program, args...)
	cmd.Dir = repoRoot()
	cmd.Env = r.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(program), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}
