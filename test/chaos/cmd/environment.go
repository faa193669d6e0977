package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// The second workspace holds only the runner-limit scenario, so that filling it to Bitbucket's
// limit of 100 runners does not starve the other pools.
const (
	limitWorkspaceUUID  = "{9d3c1f0a-7b2e-4c5d-8e6f-1a2b3c4d5e6f}"
	limitRepositoryUUID = "{2f4e6a8c-0b1d-4e3f-9a5c-7e9b1d3f5a70}"

	leaderNamespace = "chaos-system"
	// namespaceCount is also the number of OAuth consumers: busy pools get their own
	// credentials, as the operator's guide advises, so twenty pools have ten hourly budgets.
	namespaceCount = 10
	// bbsim expires access tokens after tokenTTL; the expired-token fault makes the operator
	// believe they live two hours, so it meets "Access token expired." answers.
	tokenTTL = 20 * time.Second
)

var (
	nodeCPU    = resource.MustParse("64")
	nodeMemory = resource.MustParse("512Gi")
)

// consumer is an OAuth consumer in bbsim and, for the operator's ones, the namespace whose
// "bitbucket" Secret holds it. Pools are spread over several so that one credential's hourly
// request budget is not what the run measures.
type consumer struct {
	id, secret, namespace string
}

// environment is the system under test.
type environment struct {
	sys       *harness.System
	c         client.Client
	cs        kubernetes.Interface
	proxy     *proxy
	proxySrv  *http.Server
	apiURL    string
	directURL string

	consumers []consumer
	admin     consumer
	// tenant is the good tenant of the tenant phase: an OAuth consumer and a user with an app
	// password, both its own.
	tenant        tenantCredentials
	webhookSecret string
	secrets       *secretSet

	mgrs      *managers
	apiserver *apiserverRestarter
	bbsimLog  *os.File
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("read random bytes: %v", err))
	}
	return hex.EncodeToString(b)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func startEnvironment(ctx context.Context, r *run) (*environment, error) {
	env := &environment{secrets: newSecretSet()}
	for i := 1; i <= namespaceCount; i++ {
		c := consumer{id: fmt.Sprintf("chaos-consumer-%d", i), secret: randomHex(32), namespace: fmt.Sprintf("chaos-%d", i)}
		env.consumers = append(env.consumers, c)
		env.secrets.add(c.secret, "pool credentials")
	}
	// The admin consumer plays a person in the Bitbucket UI; its secret is never given to the
	// operator, so it is not looked for in the operator's output.
	env.admin = consumer{id: "chaos-admin", secret: randomHex(32)}
	env.tenant = tenantCredentials{
		consumer: consumer{id: "chaos-consumer-tenant-good", secret: randomHex(32), namespace: tenantGoodNamespace},
		user:     "tenant-good-user", password: randomHex(24),
	}
	env.secrets.add(env.tenant.consumer.secret, "pool credentials")
	env.secrets.add(env.tenant.password, "pool credentials")
	env.webhookSecret = randomHex(24)
	env.secrets.add(env.webhookSecret, "webhook secret")
	secretFile := filepath.Join(r.tmp, "webhook-secret")
	if err := os.WriteFile(secretFile, []byte(env.webhookSecret), 0o600); err != nil {
		return nil, fmt.Errorf("write webhook secret: %w", err)
	}

	consumers := map[string]string{env.admin.id: env.admin.secret, env.tenant.consumer.id: env.tenant.consumer.secret}
	for _, c := range env.consumers {
		consumers[c.id] = c.secret
	}
	var err error
	if env.bbsimLog, err = os.Create(filepath.Join(r.tmp, "bbsim.log")); err != nil {
		return nil, fmt.Errorf("create bbsim log: %w", err)
	}
	env.mgrs, err = newManagers(r, secretFile)
	if err != nil {
		return nil, err
	}
	var hooks []bbsim.WebhookTarget
	for _, rep := range env.mgrs.replicas {
		hooks = append(hooks, bbsim.WebhookTarget{URL: "http://" + rep.webhookAddr + "/webhooks/bitbucket", Secret: env.webhookSecret})
	}

	r.say("starting the control plane (etcd, kube-apiserver, scheduler, controller manager, kwok with 4 nodes) and bbsim...")
	startCtx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	env.sys, err = harness.Start(startCtx, harness.Options{
		NoManager: true,
		// Larger than the framework's default, so that twenty pools at their maximum fit with
		// room to spare after a node is removed.
		NodeGroups: []harness.NodeGroup{{Count: 4, CPU: nodeCPU, Memory: nodeMemory}},
		LogDir:     filepath.Join(r.tmp, "controlplane"),
		BBSim: bbsim.Options{
			Workspaces: []bbsim.Workspace{
				{UUID: bbsim.DefaultWorkspaceUUID, Slug: bbsim.DefaultWorkspaceSlug,
					Repositories: []bbsim.Repository{{UUID: bbsim.DefaultRepositoryUUID, Slug: bbsim.DefaultRepositorySlug}}},
				{UUID: limitWorkspaceUUID, Slug: "limits", Repositories: []bbsim.Repository{{UUID: limitRepositoryUUID, Slug: "svc"}}},
			},
			OAuthConsumers: consumers,
			BasicUsers:     map[string]string{env.tenant.user: env.tenant.password},
			TokenTTL:       tokenTTL,
			RetryAfter:     2 * time.Second,
			ConnectDelay:   500 * time.Millisecond,
			Webhooks:       hooks,
			Logger:         harness.FileLogger(env.bbsimLog),
		},
	})
	if err != nil {
		return env, err
	}
	env.c, env.cs = env.sys.Client, env.sys.Clientset
	env.directURL = env.sys.BBSimURL
	env.apiserver = &apiserverRestarter{workDir: filepath.Dir(env.sys.ControlPlane.KubeconfigPath), logDir: env.sys.ControlPlane.LogDir()}

	env.proxy = newProxy(env.sys.BBSim, env.secrets)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return env, fmt.Errorf("listen for the bbsim proxy: %w", err)
	}
	env.apiURL = "http://" + ln.Addr().String()
	env.proxySrv = &http.Server{Handler: env.proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = env.proxySrv.Serve(ln) }()

	for _, ns := range []string{leaderNamespace} {
		if err := env.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			return env, fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	for _, c := range env.consumers {
		if err := env.sys.CreateNamespaceFor(ctx, c.namespace, c.id, c.secret); err != nil {
			return env, err
		}
	}

	r.say("bbsim answers the operator through %s; starting two manager replicas with leader election", env.apiURL)
	if err := env.mgrs.startAll(env.sys.ControlPlane.KubeconfigPath, env.apiURL); err != nil {
		return env, err
	}
	leader, err := env.mgrs.waitLeader(ctx, 90*time.Second)
	if err != nil {
		return env, fmt.Errorf("wait for a leader: %w", err)
	}
	r.say("replica %s leads", leader.id)
	return env, nil
}

func (env *environment) stop(r *run) {
	r.say("stopping the managers and the control plane...")
	if env.mgrs != nil {
		env.mgrs.stopAll()
	}
	if env.proxySrv != nil {
		_ = env.proxySrv.Close()
	}
	if env.apiserver != nil {
		env.apiserver.stop()
	}
	if env.sys != nil {
		env.sys.Stop()
	}
	if env.bbsimLog != nil {
		_ = env.bbsimLog.Close()
	}
}

// consumerFor spreads pools over the credentials by namespace.
func (env *environment) consumerFor(i int) consumer {
	return env.consumers[i%len(env.consumers)]
}

// adminDo calls the Bitbucket API as a person would, through bbsim directly (not the operator's
// proxy), with the admin consumer's credentials. Injected faults apply to it too, so callers
// retry.
func (env *environment) adminDo(ctx context.Context, method, path string) (int, error) {
	token, err := env.adminToken(ctx)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, method, env.directURL+path, nil)
	if err != nil {
		return 0, fmt.Errorf("build %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func (env *environment) adminToken(ctx context.Context) (string, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, env.directURL+"/site/oauth2/access_token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("build token request: %w", err)
	}
	req.SetBasicAuth(env.admin.id, env.admin.secret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	defer resp.Body.Close()
	var grant struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&grant); err != nil || grant.AccessToken == "" {
		return "", fmt.Errorf("admin token: status %d, decode: %v", resp.StatusCode, err)
	}
	return grant.AccessToken, nil
}

// adminDeleteRunner deletes a Bitbucket runner behind the operator's back, retrying through
// injected faults for up to 30 seconds.
func (env *environment) adminDeleteRunner(ctx context.Context, workspace, uuid string) error {
	path := "/internal/workspaces/" + workspace + "/pipelines-config/runners/" + uuid
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, err := env.adminDo(ctx, http.MethodDelete, path)
		if err == nil && (code == http.StatusNoContent || code == http.StatusNotFound) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("delete runner %s: status %d, %v", uuid, code, err)
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}
