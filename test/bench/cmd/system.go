package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// webhookSecret signs bbsim's deliveries to the operator, as a production setup would.
const webhookSecret = "bench-webhook-secret"

// systemOptions shape one scenario's fresh local system.
type systemOptions struct {
	scenario string
	nodes    []harness.NodeGroup
	bbsim    bbsim.Options
	// inProcessOperator runs the operator in this process, with its apiserver requests counted;
	// otherwise the scenario runs bin/manager itself.
	inProcessOperator bool
	webhooks          bool
	// namespace, when set, is created with a credentials Secret for bbsim's default consumer.
	namespace string
}

// benchNamespace holds the pools of the scenarios that need one namespace.
const benchNamespace = "bench"

// system is one scenario's local system: control plane, kwok nodes, bbsim and, usually, the
// operator.
type system struct {
	*harness.System
	// requests counts the in-process operator's apiserver requests.
	requests *requestCounter
	logDir   string
	logFile  *os.File
	// traceFile lists the operator's apiserver requests one per line (see requestCounter).
	traceFile *os.File
	pools     []*v1alpha1.RunnerPool
}

// startSystem brings up a fresh system for one scenario, so scenarios never see each other's
// leftovers and each is measured on an idle control plane.
func startSystem(ctx context.Context, cfg config, opts systemOptions) (*system, error) {
	logDir := filepath.Join(cfg.logDir, opts.scenario)
	if err := os.RemoveAll(logDir); err != nil {
		return nil, fmt.Errorf("clear log directory %s: %w", logDir, err)
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("create log directory %s: %w", logDir, err)
	}
	s := &system{logDir: logDir, requests: &requestCounter{}}
	logFile, err := os.Create(filepath.Join(logDir, "operator.log"))
	if err != nil {
		return nil, fmt.Errorf("create operator log: %w", err)
	}
	s.logFile = logFile
	traceFile, err := os.Create(filepath.Join(logDir, "apiserver-requests.log"))
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("create request trace: %w", err)
	}
	s.traceFile = traceFile
	s.requests.trace = traceFile

	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	hs, err := harness.Start(startCtx, harness.Options{
		NodeGroups:    opts.nodes,
		BBSim:         opts.bbsim,
		NoManager:     true,
		WebhookSecret: webhookSecret,
		LogDir:        logDir,
	})
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start local system: %w", err)
	}
	s.System = hs
	if opts.namespace != "" {
		if err := hs.CreateNamespace(startCtx, opts.namespace); err != nil {
			s.stop()
			return nil, err
		}
	}
	if !opts.inProcessOperator {
		return s, nil
	}
	// The operator gets its own copy of the admin config, counting every request it sends.
	counted := rest.CopyConfig(hs.ControlPlane.Config)
	counted.WrapTransport = s.requests.wrap
	hs.ControlPlane.Config = counted
	if err := hs.StartManager(harness.FileLogger(logFile)); err != nil {
		s.stop()
		return nil, fmt.Errorf("start operator: %w", err)
	}
	if opts.webhooks {
		hs.BBSim.AddWebhook(bbsim.WebhookTarget{URL: hs.WebhookURL, Secret: webhookSecret})
	}
	if err := hs.WaitWebhookReceiver(startCtx); err != nil {
		s.stop()
		return nil, fmt.Errorf("wait for the operator: %w", err)
	}
	return s, nil
}

func (s *system) stop() {
	if s.System != nil {
		s.System.Stop()
	}
	if s.logFile != nil {
		s.logFile.Close()
	}
	if s.traceFile != nil {
		s.traceFile.Close()
	}
}

// requestCounter counts HTTP requests through a client's transport, in total and by verb and
// resource ("POST runners", "PATCH runners/status"). Writes of Events are also counted on their
// own (writes does not include them), so that figures can show how much of the cost they are:
// they are sent by client-go's event broadcaster off the reconcile path, but the API server
// stores each of them like any other write.
//
// With trace set, every request is also written there as one line: when it was sent, how long
// it took, its verb, path and answer, and for a status patch its body (statuses hold no
// credentials; no other body is written). The scenario's log directory keeps it as
// apiserver-requests.log, to follow a runner's writes in time.
type requestCounter struct {
	total, writes, eventWrites atomic.Int64
	mu                         sync.Mutex
	byKind                     map[string]int64
	trace                      io.Writer
}

// requestCount is the counter at one moment.
type requestCount struct{ total, writes, eventWrites int64 }

func (c requestCount) minus(o requestCount) requestCount {
	return requestCount{c.total - o.total, c.writes - o.writes, c.eventWrites - o.eventWrites}
}

func (c *requestCounter) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		c.total.Add(1)
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			if resourceOf(req.URL.Path) == "events" {
				c.eventWrites.Add(1)
			} else {
				c.writes.Add(1)
			}
		}
		kind := req.Method + " " + resourceOf(req.URL.Path)
		if req.URL.Query().Get("watch") == "true" {
			kind = "WATCH " + resourceOf(req.URL.Path)
		}
		c.mu.Lock()
		if c.byKind == nil {
			c.byKind = map[string]int64{}
		}
		c.byKind[kind]++
		c.mu.Unlock()
		if c.trace == nil {
			return next.RoundTrip(req)
		}
		var body []byte
		if req.Method == http.MethodPatch && strings.HasSuffix(req.URL.Path, "/status") && req.GetBody != nil {
			if rc, err := req.GetBody(); err == nil {
				body, _ = io.ReadAll(io.LimitReader(rc, 4096))
				rc.Close()
			}
		}
		start := time.Now()
		resp, err := next.RoundTrip(req)
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		c.mu.Lock()
		fmt.Fprintf(c.trace, "%s %6.1fms %s %s %d %s\n", start.UTC().Format("15:04:05.000"),
			float64(time.Since(start).Microseconds())/1000, kind, req.URL.Path, code, body)
		c.mu.Unlock()
		return resp, err
	})
}

func (c *requestCounter) snapshot() requestCount {
	return requestCount{c.total.Load(), c.writes.Load(), c.eventWrites.Load()}
}

// kinds returns the counts by verb and resource.
func (c *requestCounter) kinds() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.byKind)
}

// resourceOf names the resource of an API path: /api/v1/namespaces/ns/pods/name/status is
// "pods/status", /apis/g/v/runnerpools is "runnerpools".
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return path
	}
	if len(parts) >= 2 && parts[0] == "namespaces" && len(parts) != 2 {
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
		return path
	case 1, 2:
		return parts[0]
	default:
		return parts[0] + "/" + parts[2]
	}
}

// kindsDelta formats after - before, largest first.
func kindsDelta(before, after map[string]int64, per float64) string {
	type kv struct {
		kind string
		n    int64
	}
	var list []kv
	for k, n := range after {
		if d := n - before[k]; d != 0 {
			list = append(list, kv{k, d})
		}
	}
	slices.SortFunc(list, func(a, b kv) int { return int(b.n - a.n) })
	parts := make([]string, 0, len(list))
	for _, e := range list {
		parts = append(parts, fmt.Sprintf("%s: %.2f", e.kind, float64(e.n)/per))
	}
	return strings.Join(parts, "; ")
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// poolSpec is what the scenarios vary in a pool.
type poolSpec struct {
	namespace, name string
	workspace       string
	min, max        int32
	policy          v1alpha1.ScalingPolicy
	idleRunners     int32
	pollInterval    time.Duration
	scaleDownDelay  time.Duration
	ephemeral       bool
}

// createPool creates the pool and returns it as stored, with its UID (the Bitbucket name prefix
// of its runners depends on it).
func (s *system) createPool(ctx context.Context, p poolSpec) (*v1alpha1.RunnerPool, error) {
	pool := harness.Pool(p.namespace, p.name, p.min, p.max)
	if p.workspace != "" {
		pool.Spec.Bitbucket.Workspace = v1alpha1.BitbucketUUID(p.workspace)
	}
	pool.Spec.Scaling.Policy = p.policy
	pool.Spec.Scaling.IdleRunners = p.idleRunners
	pool.Spec.Scaling.PollInterval = metav1.Duration{Duration: p.pollInterval}
	pool.Spec.Scaling.ScaleDownDelay = metav1.Duration{Duration: p.scaleDownDelay}
	pool.Spec.Runner.Ephemeral = p.ephemeral
	if p.policy == v1alpha1.ScalingPolicyQueue {
		pool.Spec.Scaling.Repositories = []string{bbsim.DefaultRepositoryUUID}
	}
	if err := s.Client.Create(ctx, pool); err != nil {
		return nil, fmt.Errorf("create pool %s/%s: %w", p.namespace, p.name, err)
	}
	s.pools = append(s.pools, pool)
	return pool, nil
}

// bitbucketRunners are the simulator's runners whose name starts with prefix.
func bitbucketRunners(st bbsim.Snapshot, prefix string) []bbsim.RunnerView {
	var out []bbsim.RunnerView
	for _, r := range st.Runners {
		if strings.HasPrefix(r.Name, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// online reports a runner connected to Bitbucket: ONLINE, or running a step.
func online(r bbsim.RunnerView) bool {
	return r.Status == "ONLINE" || r.Step != ""
}

func countOnline(runners []bbsim.RunnerView) int {
	n := 0
	for _, r := range runners {
		if online(r) {
			n++
		}
	}
	return n
}

// stepsWithLabel are the simulator's steps that asked for the label.
func stepsWithLabel(st bbsim.Snapshot, label string) []bbsim.StepView {
	var out []bbsim.StepView
	for _, step := range st.Steps {
		for _, l := range step.RunsOn {
			if l == label {
				out = append(out, step)
				break
			}
		}
	}
	return out
}

// killedSteps counts steps that ended because their runner went away under them: deleted, or
// its agent gone, while running the step (internal/bbsim: agent.go and runners.go).
func killedSteps(st bbsim.Snapshot) int {
	n := 0
	for _, step := range st.Steps {
		if step.Status == "completed" && step.Result != bbsim.ResultSuccessful && strings.Contains(step.Reason, "while running the step") {
			n++
		}
	}
	return n
}

// runnerObjects counts the Runner objects of a pool.
func (s *system) runnerObjects(ctx context.Context, pool *v1alpha1.RunnerPool) (int, error) {
	var list v1alpha1.RunnerList
	if err := s.Client.List(ctx, &list, client.InNamespace(pool.Namespace), client.MatchingLabels{v1alpha1.LabelPool: pool.Name}); err != nil {
		return 0, fmt.Errorf("list runners of %s: %w", pool.Name, err)
	}
	return len(list.Items), nil
}

// poolPods returns a pool's pods.
func (s *system) poolPods(ctx context.Context, pool *v1alpha1.RunnerPool) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := s.Client.List(ctx, &list, client.InNamespace(pool.Namespace), client.MatchingLabels{v1alpha1.LabelPool: pool.Name}); err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", pool.Name, err)
	}
	return list.Items, nil
}

// waitFor polls cond every interval until it holds, ctx ends or timeout passes; the error
// carries cond's last word.
func waitFor(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, string, error)) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, why, err := cond()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		last = why
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s: %s", timeout, what, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (%s)", what, ctx.Err(), last)
		case <-time.After(interval):
		}
	}
}

// leftovers are what a deleted pool may leave behind.
type leftovers struct {
	pools, runners, pods, secrets, bitbucket int
}

func (l leftovers) total() int { return l.pools + l.runners + l.pods + l.secrets + l.bitbucket }

func (l leftovers) String() string {
	return fmt.Sprintf("%d pools, %d Runners, %d pods, %d Secrets, %d Bitbucket runners", l.pools, l.runners, l.pods, l.secrets, l.bitbucket)
}

// countLeftovers counts, in every namespace, the objects the operator owns and the Bitbucket
// runners carrying a pool marker.
func (s *system) countLeftovers(ctx context.Context) (leftovers, error) {
	var l leftovers
	var pools v1alpha1.RunnerPoolList
	if err := s.Client.List(ctx, &pools); err != nil {
		return l, fmt.Errorf("list pools: %w", err)
	}
	l.pools = len(pools.Items)
	var runners v1alpha1.RunnerList
	if err := s.Client.List(ctx, &runners); err != nil {
		return l, fmt.Errorf("list runners: %w", err)
	}
	l.runners = len(runners.Items)
	var pods corev1.PodList
	if err := s.Client.List(ctx, &pods, client.HasLabels{v1alpha1.LabelRunner}); err != nil {
		return l, fmt.Errorf("list runner pods: %w", err)
	}
	l.pods = len(pods.Items)
	var secrets corev1.SecretList
	if err := s.Client.List(ctx, &secrets, client.HasLabels{v1alpha1.LabelRunner}); err != nil {
		return l, fmt.Errorf("list runner secrets: %w", err)
	}
	l.secrets = len(secrets.Items)
	l.bitbucket = len(bitbucketRunners(s.BBSim.State(), "rp-"))
	return l, nil
}

// teardown deletes every pool, as a user would, and waits up to timeout for the operator to
// clean up (busy runners finish their step first). It returns how long that took and what was
// left.
func (s *system) teardown(ctx context.Context, timeout time.Duration) (time.Duration, leftovers, error) {
	start := time.Now()
	var pools v1alpha1.RunnerPoolList
	if err := s.Client.List(ctx, &pools); err != nil {
		return 0, leftovers{}, fmt.Errorf("list pools: %w", err)
	}
	for i := range pools.Items {
		if err := s.Client.Delete(ctx, &pools.Items[i]); client.IgnoreNotFound(err) != nil {
			return 0, leftovers{}, fmt.Errorf("delete pool %s: %w", pools.Items[i].Name, err)
		}
	}
	var left leftovers
	err := waitFor(ctx, timeout, time.Second, "the operator to clean up", func() (bool, string, error) {
		var err error
		left, err = s.countLeftovers(ctx)
		if err != nil {
			return false, "", err
		}
		return left.total() == 0, left.String(), nil
	})
	if err != nil && ctx.Err() != nil {
		return time.Since(start), left, err
	}
	// A timeout is a finding, not a failure: what is left is reported as leaked.
	return time.Since(start), left, nil
}

// nodesFor sizes fake nodes to hold n runner pods of the default shape (1x step: docker 4Gi +
// runner 512Mi of memory, 1.25 CPU) with some room to spare; pods per node stay under the
// kubelet's 110.
func nodesFor(n int) []harness.NodeGroup {
	const perNode = 100
	count := (n + perNode - 1) / perNode
	per := (n + count - 1) / count
	// 10% more than needed, so the scheduler never runs a node to its last byte.
	memory := fmt.Sprintf("%dMi", per*4608*11/10)
	cpu := fmt.Sprintf("%d", per*5/4*11/10+1)
	return []harness.NodeGroup{{Count: count, CPU: resource.MustParse(cpu), Memory: resource.MustParse(memory)}}
}

// progress prints a line of the benchmark's progress.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bench %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func keyOf(obj client.Object) client.ObjectKey { return client.ObjectKeyFromObject(obj) }

// dumpState writes bbsim's whole state (runners, steps with their timestamps, call counts) to
// the scenario's log directory, for a closer look at a figure.
func (s *system) dumpState(name string) {
	data, err := json.MarshalIndent(s.BBSim.State(), "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(s.logDir, name), data, 0o644)
	}
	if err != nil {
		progress("keep bbsim state: %v", err)
	}
}
