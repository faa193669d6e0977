package install_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/runnerpool/runnerpool-operator/test/framework"
)

var crdNames = []string{"runnerpools.ci.runnerpool.dev", "runners.ci.runnerpool.dev"}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// access is one question to `kubectl auth can-i` about the manager's ServiceAccount.
type access struct {
	verb, resource, subresource string
	namespace                   string // "*": all namespaces; "": cluster scope
	allowed                     bool
}

// cluster is the control plane and the clients and tools the checks use.
type cluster struct {
	t         *testing.T
	env       []string
	helm      string
	kubectl   string
	clientset kubernetes.Interface
	dynamic   dynamic.Interface
}

// startCluster starts a control plane without nodes and the clients and tools to install on it.
func startCluster(t *testing.T) (*cluster, *framework.ControlPlane) {
	c := &cluster{t: t, helm: tool(t, "helm"), kubectl: tool(t, "kubectl")}
	cp := framework.StartForTest(t, framework.Options{Nodes: -1})
	c.env = commandEnv(t, cp.KubeconfigPath)
	var err error
	if c.clientset, err = kubernetes.NewForConfig(cp.Config); err != nil {
		t.Fatal(err)
	}
	if c.dynamic, err = dynamic.NewForConfig(cp.Config); err != nil {
		t.Fatal(err)
	}
	return c, cp
}

// Installing, upgrading and removing the operator the way a user does, with the
// chart and with the bundle, on a real API server with RBAC. There is no image and
// no deployment controller here: the manager never runs, and this checks only what
// the install paths create and what they allow.
func TestInstallOnACluster(t *testing.T) {
	c, _ := startCluster(t)
	for _, ns := range []string{"team-a", "team-b", "elsewhere", helmNamespace} {
		namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		if ns == helmNamespace {
			// As the bundle's namespace does: the manager must pass the restricted
			// Pod Security Standard.
			namespace.Labels = map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}
		}
		if _, err := c.clientset.CoreV1().Namespaces().Create(t.Context(), namespace, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("helm chart: install, upgrade to some namespaces, uninstall", c.helmLifecycle)
	t.Run("kubectl bundle: apply and delete", c.bundleLifecycle)
}

const helmNamespace = "rp-helm"

func (c *cluster) helmLifecycle(t *testing.T) {
	const (
		release   = "rp"
		namespace = helmNamespace
		fullname  = "rp-runnerpool-operator"
	)
	serviceAccount := "system:serviceaccount:" + namespace + ":" + fullname
	ctx := t.Context()

	mustRun(t, c.env, c.helm, "install", release, chartDir, "--namespace", namespace)
	c.waitCRDsEstablished(t)
	c.checkKubectlNames(t, "team-a")
	deployment, err := c.clientset.AppsV1().Deployments(namespace).Get(ctx, fullname, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Deployment: %v", err)
	}
	if got := *deployment.Spec.Replicas; got != 1 {
		t.Errorf("Deployment replicas = %d, want 1", got)
	}
	c.checkPodAdmitted(t, deployment)
	c.mustExist(t, "ServiceAccount", func() error {
		_, err := c.clientset.CoreV1().ServiceAccounts(namespace).Get(ctx, fullname, metav1.GetOptions{})
		return err
	})
	c.mustExist(t, "metrics Service", func() error {
		_, err := c.clientset.CoreV1().Services(namespace).Get(ctx, fullname+"-metrics", metav1.GetOptions{})
		return err
	})
	c.mustExist(t, "ClusterRole", func() error {
		_, err := c.clientset.RbacV1().ClusterRoles().Get(ctx, fullname, metav1.GetOptions{})
		return err
	})
	c.mustExist(t, "ClusterRoleBinding", func() error {
		_, err := c.clientset.RbacV1().ClusterRoleBindings().Get(ctx, fullname, metav1.GetOptions{})
		return err
	})
	c.mustExist(t, "leader election RoleBinding", func() error {
		_, err := c.clientset.RbacV1().RoleBindings(namespace).Get(ctx, fullname+"-leader-election", metav1.GetOptions{})
		return err
	})
	c.checkAccess(t, serviceAccount, []access{
		{verb: "create", resource: "runners.ci.runnerpool.dev", namespace: "team-a", allowed: true},
		{verb: "patch", resource: "runnerpools.ci.runnerpool.dev", subresource: "status", namespace: "elsewhere", allowed: true},
		{verb: "create", resource: "pods", namespace: "team-b", allowed: true},
		{verb: "create", resource: "secrets", namespace: "elsewhere", allowed: true},
		{verb: "create", resource: "events.events.k8s.io", namespace: "team-a", allowed: true},
		{verb: "get", resource: "leases.coordination.k8s.io", namespace: namespace, allowed: true},
		{verb: "update", resource: "leases.coordination.k8s.io", namespace: namespace, allowed: true},
		{verb: "get", resource: "leases.coordination.k8s.io", namespace: "team-a", allowed: false},
		{verb: "update", resource: "deployments.apps", namespace: "team-a", allowed: false},
		{verb: "delete", resource: "customresourcedefinitions.apiextensions.k8s.io", allowed: false},
	})

	// Narrow the operator to two namespaces, run a second replica and take
	// webhooks: the ClusterRole goes, a Role per namespace comes, and so do the
	// webhook Secret, Service and Ingress.
	mustRun(t, c.env, c.helm, "upgrade", release, chartDir, "--namespace", namespace,
		"--set", "replicas=2", "--set", "watchNamespaces={team-a,team-b}",
		"--set", "webhook.enabled=true", "--set", "webhook.secret.value=not-a-real-secret",
		"--set", "webhook.ingress.enabled=true", "--set", "webhook.ingress.hosts={runners.example.com}")
	deployment, err = c.clientset.AppsV1().Deployments(namespace).Get(ctx, fullname, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Deployment after upgrade: %v", err)
	}
	if got := *deployment.Spec.Replicas; got != 2 {
		t.Errorf("Deployment replicas after upgrade = %d, want 2", got)
	}
	if args := deployment.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--namespaces=team-a,team-b") {
		t.Errorf("manager args after upgrade = %v, want --namespaces=team-a,team-b", args)
	}
	c.checkPodAdmitted(t, deployment)
	c.mustExist(t, "webhook Secret", func() error {
		_, err := c.clientset.CoreV1().Secrets(namespace).Get(ctx, fullname+"-webhook", metav1.GetOptions{})
		return err
	})
	c.mustExist(t, "webhook Ingress", func() error {
		_, err := c.clientset.NetworkingV1().Ingresses(namespace).Get(ctx, fullname+"-webhook", metav1.GetOptions{})
		return err
	})
	c.mustBeGone(t, "ClusterRole", func() error {
		_, err := c.clientset.RbacV1().ClusterRoles().Get(ctx, fullname, metav1.GetOptions{})
		return err
	})
	for _, ns := range []string{"team-a", "team-b"} {
		c.mustExist(t, "Role in "+ns, func() error {
			_, err := c.clientset.RbacV1().Roles(ns).Get(ctx, fullname, metav1.GetOptions{})
			return err
		})
	}
	c.checkAccess(t, serviceAccount, []access{
		{verb: "create", resource: "runners.ci.runnerpool.dev", namespace: "team-a", allowed: true},
		{verb: "create", resource: "runners.ci.runnerpool.dev", namespace: "elsewhere", allowed: false},
		{verb: "patch", resource: "runnerpools.ci.runnerpool.dev", subresource: "status", namespace: "team-b", allowed: true},
		{verb: "patch", resource: "runnerpools.ci.runnerpool.dev", subresource: "status", namespace: "elsewhere", allowed: false},
		{verb: "create", resource: "pods", namespace: "team-a", allowed: true},
		{verb: "create", resource: "pods", namespace: "elsewhere", allowed: false},
		{verb: "create", resource: "secrets", namespace: "team-b", allowed: true},
		{verb: "list", resource: "secrets", namespace: "*", allowed: false},
		{verb: "create", resource: "events.events.k8s.io", namespace: "team-b", allowed: true},
		{verb: "create", resource: "events.events.k8s.io", namespace: namespace, allowed: true},
		{verb: "get", resource: "leases.coordination.k8s.io", namespace: namespace, allowed: true},
	})

	// No Job runs here, so neither would the cleanup hook: running_test.go covers it.
	mustRun(t, c.env, c.helm, "uninstall", release, "--namespace", namespace, "--no-hooks", "--wait", "--timeout", "30s")
	c.mustBeGone(t, "Deployment", func() error {
		_, err := c.clientset.AppsV1().Deployments(namespace).Get(ctx, fullname, metav1.GetOptions{})
		return err
	})
	c.mustBeGone(t, "ServiceAccount", func() error {
		_, err := c.clientset.CoreV1().ServiceAccounts(namespace).Get(ctx, fullname, metav1.GetOptions{})
		return err
	})
	c.mustBeGone(t, "Role in team-a", func() error {
		_, err := c.clientset.RbacV1().Roles("team-a").Get(ctx, fullname, metav1.GetOptions{})
		return err
	})
	// Helm never deletes what crds/ installed, so RunnerPools outlive the release.
	for _, name := range crdNames {
		c.mustExist(t, "CRD "+name, func() error {
			_, err := c.dynamic.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
			return err
		})
	}
}

func (c *cluster) bundleLifecycle(t *testing.T) {
	const namespace = "runnerpool-system"
	ctx := t.Context()

	mustRun(t, c.env, c.kubectl, "apply", "--server-side", "-f", installYAML)
	c.waitCRDsEstablished(t)
	deployment, err := c.clientset.AppsV1().Deployments(namespace).Get(ctx, "runnerpool-operator", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Deployment: %v", err)
	}
	c.checkPodAdmitted(t, deployment)
	c.mustExist(t, "ClusterRoleBinding", func() error {
		_, err := c.clientset.RbacV1().ClusterRoleBindings().Get(ctx, "runnerpool-operator", metav1.GetOptions{})
		return err
	})
	c.checkAccess(t, "system:serviceaccount:"+namespace+":runnerpool-operator", []access{
		{verb: "create", resource: "runners.ci.runnerpool.dev", namespace: "team-a", allowed: true},
		{verb: "patch", resource: "runnerpools.ci.runnerpool.dev", subresource: "status", namespace: "team-b", allowed: true},
		{verb: "create", resource: "pods", namespace: "elsewhere", allowed: true},
		{verb: "create", resource: "secrets", namespace: "team-a", allowed: true},
		{verb: "create", resource: "events.events.k8s.io", namespace: "team-a", allowed: true},
		{verb: "get", resource: "leases.coordination.k8s.io", namespace: namespace, allowed: true},
		{verb: "get", resource: "leases.coordination.k8s.io", namespace: "team-a", allowed: false},
		{verb: "update", resource: "deployments.apps", namespace: "team-a", allowed: false},
	})

	// Without a namespace controller here the namespace never finishes
	// terminating, so kubectl must not wait for it.
	mustRun(t, c.env, c.kubectl, "delete", "-f", installYAML, "--wait=false")
	for _, name := range crdNames {
		// Gone, or on its way: the API server's own CRD cleanup can take minutes on a loaded
		// machine, and that is not what this test is about.
		c.mustBeGone(t, "CRD "+name, func() error {
			crd, err := c.dynamic.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
			if err == nil && crd.GetDeletionTimestamp() != nil {
				return apierrors.NewNotFound(crdResource.GroupResource(), name)
			}
			return err
		})
	}
	c.mustBeGone(t, "ClusterRole", func() error {
		_, err := c.clientset.RbacV1().ClusterRoles().Get(ctx, "runnerpool-operator", metav1.GetOptions{})
		return err
	})
	ns, err := c.clientset.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	if err == nil && ns.DeletionTimestamp == nil {
		t.Errorf("namespace %s is not being deleted", namespace)
	} else if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s: %v", namespace, err)
	}
}

// checkPodAdmitted creates a pod from the Deployment's template as a dry run, so
// admission (Pod Security among it) judges the pod the ReplicaSet would create;
// there is no deployment controller here to create it.
func (c *cluster) checkPodAdmitted(t *testing.T, deployment *appsv1.Deployment) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: deployment.Name + "-", Labels: deployment.Spec.Template.Labels},
		Spec:       deployment.Spec.Template.Spec,
	}
	if _, err := c.clientset.CoreV1().Pods(deployment.Namespace).Create(t.Context(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("pod of Deployment %s/%s not admitted: %v", deployment.Namespace, deployment.Name, err)
	}
}

// checkKubectlNames checks the names users type: `kubectl get runnerpool` lists
// pools only (a category named like the kind would win over the kind and list
// Runners too), Runners have a short name, and the category lists both.
func (c *cluster) checkKubectlNames(t *testing.T, namespace string) {
	t.Helper()
	// Not t.TempDir(): kubectl splits -f at commas, and the subtest's name has one.
	dir, err := os.MkdirTemp("", "kubectl-names-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	objects := filepath.Join(dir, "objects.yaml")
	const manifest = `apiVersion: ci.runnerpool.dev/v1alpha1
kind: RunnerPool
metadata: {name: names}
spec:
  bitbucket:
    workspace: "{5b2f6c1e-8d4a-4e3b-9f21-7a6c0d9e4b10}"
    credentialsSecretRef: {name: bitbucket-credentials}
  maxRunners: 1
---
apiVersion: ci.runnerpool.dev/v1alpha1
kind: Runner
metadata: {name: names-1}
spec:
  workspace: "{5b2f6c1e-8d4a-4e3b-9f21-7a6c0d9e4b10}"
  bitbucketName: rp-00000000-names-1
  labels: [self.hosted, linux]
`
	if err := os.WriteFile(objects, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, c.env, c.kubectl, "apply", "-n", namespace, "-f", objects)
	defer mustRun(t, c.env, c.kubectl, "delete", "-n", namespace, "-f", objects, "--wait=false")
	for _, tt := range []struct{ resource, want string }{
		{"runnerpool", "runnerpool.ci.runnerpool.dev/names"},
		{"rp", "runnerpool.ci.runnerpool.dev/names"},
		{"runner", "runner.ci.runnerpool.dev/names-1"},
		{"rnr", "runner.ci.runnerpool.dev/names-1"},
		{"runnerpool-operator", "runner.ci.runnerpool.dev/names-1 runnerpool.ci.runnerpool.dev/names"},
	} {
		r := run(t, c.env, c.kubectl, "get", tt.resource, "-n", namespace, "-o", "name")
		if r.err != nil {
			t.Errorf("kubectl get %s: %v\n%s", tt.resource, r.err, r.stderr)
			continue
		}
		got := strings.Fields(r.stdout)
		slices.Sort(got)
		if want := strings.Fields(tt.want); !slices.Equal(got, want) {
			t.Errorf("kubectl get %s -o name = %q, want %q", tt.resource, got, want)
		}
	}
}

func (c *cluster) waitCRDsEstablished(t *testing.T) {
	t.Helper()
	args := []string{"wait", "--for=condition=Established", "--timeout=20s"}
	for _, name := range crdNames {
		args = append(args, "customresourcedefinition/"+name)
	}
	mustRun(t, c.env, c.kubectl, args...)
}

func (c *cluster) mustExist(t *testing.T, what string, get func() error) {
	t.Helper()
	if err := get(); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// mustBeGone waits for get to report NotFound: some deletions finish a moment
// after the request (finalizers, garbage collection).
func (c *cluster) mustBeGone(t *testing.T, what string, get func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for {
		err := get()
		if apierrors.IsNotFound(err) {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("%s still there (last error: %v)", what, err)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *cluster) checkAccess(t *testing.T, user string, checks []access) {
	t.Helper()
	for _, check := range checks {
		args := []string{"auth", "can-i", check.verb, check.resource, "--as=" + user}
		if check.subresource != "" {
			args = append(args, "--subresource="+check.subresource)
		}
		where := check.namespace
		switch check.namespace {
		case "*":
			args = append(args, "--all-namespaces")
			where = "all namespaces"
		case "":
			where = "the cluster"
		default:
			args = append(args, "--namespace="+check.namespace)
		}
		// can-i exits 1 for "no"; the answer on stdout is what counts.
		r := run(t, c.env, c.kubectl, args...)
		answer := strings.TrimSpace(r.stdout)
		if answer != "yes" && answer != "no" {
			t.Errorf("kubectl %s: %v\n%s%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
			continue
		}
		if got := answer == "yes"; got != check.allowed {
			resource := check.resource
			if check.subresource != "" {
				resource += "/" + check.subresource
			}
			t.Errorf("%s can %s %s in %s: %v, want %v", user, check.verb, resource, where, got, check.allowed)
		}
	}
}
