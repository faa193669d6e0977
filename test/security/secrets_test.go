package security_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/bbwebhook"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

const (
	securityNamespace = "security"
	consumerID        = "security-consumer"
	basicUser         = "security-user"
)

// Every secret the system handles, Bitbucket credentials of each kind (right and wrong), the
// runners' OAuth clients, the access tokens Bitbucket issues and the webhook secret, stays out
// of the operator's logs at full verbosity, events, RunnerPool, Runner and pod objects, metrics,
// webhook answers and the simulator's own logs, through a whole life of pools: scaling up for
// steps after a webhook, draining, bad deliveries, deletion.
func TestNoSecretInLogsEventsStatusesOrMetrics(t *testing.T) {
	consumerSecret := randomSecret(t, "consumer-")
	wrongSecret := randomSecret(t, "wrong-")
	accessToken := randomSecret(t, "token-")
	basicPassword := randomSecret(t, "password-")
	webhookSecret := randomSecret(t, "webhook-")

	var operatorLogs, bbsimLogs logBuffer
	capturedLogs.Store(&operatorLogs)
	t.Cleanup(func() { capturedLogs.Store(nil) })
	traffic := &bitbucketTraffic{}
	sys := startSystem(t, harness.Options{
		Logger:        operatorLogs.logger(),
		WebhookSecret: webhookSecret,
		WrapBBSim:     traffic.wrap,
		BBSim: bbsim.Options{
			OAuthConsumers: map[string]string{consumerID: consumerSecret},
			AccessTokens:   []string{accessToken},
			BasicUsers:     map[string]string{basicUser: basicPassword},
			ConnectDelay:   200 * time.Millisecond,
			Logger:         bbsimLogs.logger(),
		},
	})
	ctx := t.Context()
	ns := securityNamespace

	objects := newObjectRecorder()
	runnerSecrets := &valueSet{}
	runnersDeletedWhilePoolLived := &counter{}
	watcher, err := client.NewWithWatch(sys.ControlPlane.Config, client.Options{Scheme: sys.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	objects.watch(ctx, t, watcher, "RunnerPools", &v1alpha1.RunnerPoolList{}, nil)
	objects.watch(ctx, t, watcher, "Runners", &v1alpha1.RunnerList{}, func(ev watch.EventType, obj client.Object) {
		if ev == watch.Deleted && obj.GetLabels()[v1alpha1.LabelPool] == "builds" {
			runnersDeletedWhilePoolLived.add()
		}
	})
	objects.watch(ctx, t, watcher, "Pods", &corev1.PodList{}, nil)
	// Runner Secrets hold a runner's OAuth client by design: they are read, never scanned.
	secretsOnly := newObjectRecorder()
	secretsOnly.watch(ctx, t, watcher, "Secrets", &corev1.SecretList{}, func(_ watch.EventType, obj client.Object) {
		if s, ok := obj.(*corev1.Secret); ok {
			runnerSecrets.add(string(s.Data[v1alpha1.SecretKeyClientSecret]))
		}
	}, client.HasLabels{v1alpha1.LabelPool})

	if err := sys.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]map[string]string{
		"consumer": {v1alpha1.SecretKeyClientID: consumerID, v1alpha1.SecretKeyClientSecret: consumerSecret},
		"wrong":    {v1alpha1.SecretKeyClientID: consumerID, v1alpha1.SecretKeyClientSecret: wrongSecret},
		"token":    {v1alpha1.SecretKeyAccessToken: accessToken},
		"basic":    {v1alpha1.SecretKeyUsername: basicUser, v1alpha1.SecretKeyPassword: basicPassword},
	} {
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: data}
		if err := sys.Client.Create(ctx, secret); err != nil {
			t.Fatal(err)
		}
	}

	builds := harness.Pool(ns, "builds", 1, 3)
	builds.Spec.Bitbucket.CredentialsSecretRef.Name = "consumer"
	pools := []*v1alpha1.RunnerPool{builds}
	for _, credentials := range []string{"token", "basic", "wrong"} {
		pool := harness.Pool(ns, credentials, 1, 1)
		pool.Spec.Bitbucket.CredentialsSecretRef.Name = credentials
		pool.Spec.Scaling.IdleRunners = 0
		pools = append(pools, pool)
	}
	for _, pool := range pools {
		if err := sys.Client.Create(ctx, pool); err != nil {
			t.Fatal(err)
		}
	}
	prefix := func(name string) string { return controllers.BitbucketNamePrefix(getPool(t, sys, ns, name)) }

	for _, name := range []string{"builds", "token", "basic"} {
		p := prefix(name)
		eventually(t, 45*time.Second, "pool "+name+" to have an ONLINE runner", func() (bool, string) {
			total, online := onlineRunners(sys, p)
			return online >= 1, fmt.Sprintf("%d runners, %d ONLINE", total, online)
		})
	}
	eventually(t, 30*time.Second, "the pool with the wrong secret to report its credentials", func() (bool, string) {
		c := meta.FindStatusCondition(getPool(t, sys, ns, "wrong").Status.Conditions, v1alpha1.ConditionCredentialsValid)
		return c != nil && c.Status == metav1.ConditionFalse, fmt.Sprintf("CredentialsValid %+v", c)
	})

	// Two steps for the builds pool: one takes the idle runner, the other waits, bbsim's
	// signed webhook wakes the pool and it scales up; when both are done it drains back.
	buildsPrefix := prefix("builds")
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 2, RunsOn: []string{"self.hosted", "linux", "builds"}, Duration: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	peak := 0
	eventually(t, 60*time.Second, "both steps to finish", func() (bool, string) {
		total, _ := onlineRunners(sys, buildsPrefix)
		peak = max(peak, total)
		done := 0
		for _, st := range sys.BBSim.State().Steps {
			if st.Status == "completed" {
				done++
			}
		}
		return done == 2, fmt.Sprintf("%d of 2 steps done, %d runners", done, total)
	})
	if peak < 2 {
		t.Errorf("the builds pool peaked at %d runners, want it to scale up for the waiting step", peak)
	}
	eventually(t, 45*time.Second, "the builds pool to drain back to one runner", func() (bool, string) {
		var runners v1alpha1.RunnerList
		if err := sys.Client.List(ctx, &runners, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelPool: "builds"}); err != nil {
			return false, err.Error()
		}
		return len(runners.Items) == 1 && runnersDeletedWhilePoolLived.get() > 0,
			fmt.Sprintf("%d Runners, %d deleted so far", len(runners.Items), runnersDeletedWhilePoolLived.get())
	})

	webhookAnswers := checkWebhookReceiver(t, sys, []byte(webhookSecret))

	for _, pool := range pools {
		if err := sys.Client.Delete(ctx, pool); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	eventually(t, 60*time.Second, "every pool, Runner, runner Secret and runner pod to be gone", func() (bool, string) {
		left := map[string]int{}
		for what, list := range map[string]client.ObjectList{
			"pools": &v1alpha1.RunnerPoolList{}, "Runners": &v1alpha1.RunnerList{},
			"runner Secrets": &corev1.SecretList{}, "pods": &corev1.PodList{},
		} {
			opts := []client.ListOption{client.InNamespace(ns)}
			if what == "runner Secrets" {
				opts = append(opts, client.HasLabels{v1alpha1.LabelPool})
			}
			if err := sys.Client.List(ctx, list, opts...); err != nil {
				return false, err.Error()
			}
			if n := meta.LenList(list); n > 0 {
				left[what] = n
			}
		}
		return len(left) == 0, fmt.Sprintf("left: %v", left)
	})
	if err := sys.StopManager(); err != nil {
		t.Errorf("stop operator: %v", err)
	}

	captures := map[string]string{
		"operator logs":      operatorLogs.String(),
		"bbsim logs":         bbsimLogs.String(),
		"webhook answers":    webhookAnswers,
		"events":             eventsText(t, sys),
		"operator metrics":   metricsText(t, sys.Registry),
		"controller metrics": metricsText(t, crmetrics.Registry),
		"bbsim state":        jsonText(t, sys.BBSim.State()),
	}
	objects.captures(captures, "watched ")

	tokens, createdRunnerSecrets, bearerCalls := traffic.snapshot()
	runnerSecrets.add(createdRunnerSecrets...)
	checkCapturesAreReal(t, captures, len(tokens), bearerCalls, runnerSecrets.len())

	var needles []needle
	needles = append(needles, needlesFor("the pool's OAuth consumer secret", consumerSecret)...)
	needles = append(needles, basicAuthNeedle("the pool's OAuth consumer", consumerID, consumerSecret))
	needles = append(needles, needlesFor("the wrong OAuth consumer secret", wrongSecret)...)
	needles = append(needles, basicAuthNeedle("the wrong OAuth consumer", consumerID, wrongSecret))
	needles = append(needles, needlesFor("the workspace access token", accessToken)...)
	needles = append(needles, needlesFor("the app password", basicPassword)...)
	needles = append(needles, basicAuthNeedle("the app password", basicUser, basicPassword))
	needles = append(needles, needlesFor("the webhook secret", webhookSecret)...)
	for i, token := range tokens {
		needles = append(needles, needlesFor(fmt.Sprintf("OAuth token #%d issued by Bitbucket", i+1), token)...)
	}
	for i, secret := range runnerSecrets.values() {
		needles = append(needles, needlesFor(fmt.Sprintf("runner OAuth client secret #%d", i+1), secret)...)
	}

	// The scan must be able to see a secret where there is one: runner Secrets hold them.
	canary := map[string]string{}
	secretsOnly.captures(canary, "")
	if leaks := findLeaks(canary, needles); len(leaks) == 0 {
		t.Fatal("the scan finds no runner OAuth client secret even in the runner Secrets: it would miss a leak")
	}

	if leaks := findShapes(captures); len(leaks) > 0 {
		t.Errorf("credential-shaped text in the captures:\n  %s", strings.Join(leaks, "\n  "))
	}
	if leaks := findLeaks(captures, needles); len(leaks) > 0 {
		t.Errorf("secrets leaked (%d of %d needles over %d captures):\n  %s", len(leaks), len(needles), len(captures), strings.Join(leaks, "\n  "))
	}
	t.Logf("scanned %d captures (%d log lines, %d object versions) for %d secret forms: %d tokens, %d runner client secrets",
		len(captures), operatorLogs.count+bbsimLogs.count, objects.count, len(needles), len(tokens), runnerSecrets.len())
}

// checkWebhookReceiver sends the receiver what an attacker or a misconfigured sender would:
// a replayed delivery with a bad signature, no signature, a weaker algorithm, an unknown event
// and an oversized body, and checks each answer and that none of them woke a pool. It returns
// the answers' bodies, which are scanned with the rest.
func checkWebhookReceiver(t *testing.T, sys *harness.System, secret []byte) string {
	t.Helper()
	ctx := t.Context()
	body, err := json.Marshal(map[string]any{
		"repository": map[string]any{
			"uuid":      bbsim.DefaultRepositoryUUID,
			"full_name": bbsim.DefaultWorkspaceSlug + "/" + bbsim.DefaultRepositorySlug,
			"workspace": map[string]any{"uuid": bbsim.DefaultWorkspaceUUID, "slug": bbsim.DefaultWorkspaceSlug},
		},
		"commit_status": map[string]any{"state": bbwebhook.StateInProgress},
	})
	if err != nil {
		t.Fatal(err)
	}
	valid := bbwebhook.Sign(secret, body)
	tampered := bbwebhook.Sign(append([]byte("not-"), secret...), body)
	outcome := func(event, outcome string) float64 {
		return counterValue(t, sys.Registry, "runnerpool_webhook_deliveries_total", map[string]string{"event": event, "outcome": outcome})
	}
	pollRequested := func() string {
		return getPool(t, sys, securityNamespace, "builds").Annotations[v1alpha1.AnnotationPollRequested]
	}

	var answers strings.Builder
	deliver := func(event string, payload []byte, signature string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, sys.WebhookURL, bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(bbwebhook.EventKeyHeader, event)
		req.Header.Set(bbwebhook.RequestUUIDHeader, fmt.Sprintf("{%08d-0000-4000-8000-000000000000}", answers.Len()))
		if signature != "" {
			req.Header.Set(bbwebhook.SignatureHeader, signature)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("deliver %s: %v", event, err)
		}
		answers.WriteString(readAll(t, resp.Body))
		return resp.StatusCode
	}

	before := pollRequested()
	acceptedBefore := outcome(bbwebhook.EventCommitStatusCreated, bbwebhook.OutcomeAccepted)
	refusedBefore := outcome(bbwebhook.EventCommitStatusCreated, bbwebhook.OutcomeBadSignature)
	refusals := []struct {
		name      string
		signature string
	}{
		{"replayed with a tampered signature", tampered},
		{"without a signature", ""},
		{"signed with sha1", "sha1=" + strings.TrimPrefix(valid, "sha256=")[:40]},
		{"with a truncated signature", valid[:len(valid)-2]},
	}
	for _, r := range refusals {
		if code := deliver(bbwebhook.EventCommitStatusCreated, body, r.signature); code != http.StatusUnauthorized {
			t.Errorf("delivery %s: status %d, want 401", r.name, code)
		}
	}
	if got := outcome(bbwebhook.EventCommitStatusCreated, bbwebhook.OutcomeBadSignature) - refusedBefore; got != float64(len(refusals)) {
		t.Errorf("%v deliveries counted as bad signatures, want %d", got, len(refusals))
	}
	if got := outcome(bbwebhook.EventCommitStatusCreated, bbwebhook.OutcomeAccepted); got != acceptedBefore {
		t.Errorf("a delivery with a bad signature was accepted (%v accepted, %v before)", got, acceptedBefore)
	}
	// A woken pool gets its poll-requested annotation within milliseconds; give it well over
	// the waker's 2s spacing to show up if a refused delivery had woken it.
	time.Sleep(2500 * time.Millisecond)
	if after := pollRequested(); after != before {
		t.Errorf("a refused delivery woke the pool: poll requested at %q, %q before", after, before)
	}

	if code := deliver("repo:fork", body, bbwebhook.Sign(secret, body)); code != http.StatusAccepted {
		t.Errorf("signed unknown event: status %d, want 202", code)
	}
	if got := outcome("other", bbwebhook.OutcomeIgnored); got != 1 {
		t.Errorf("%v unknown events counted as ignored, want 1", got)
	}
	oversized := append(bytes.Repeat([]byte(" "), int(bbwebhook.DefaultMaxBody)), body...)
	if code := deliver(bbwebhook.EventCommitStatusCreated, oversized, bbwebhook.Sign(secret, oversized)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized delivery: status %d, want 413", code)
	}

	// The same body, correctly signed, does wake the pool: the quiet above was a refusal, not
	// a receiver that never wakes anything.
	if code := deliver(bbwebhook.EventCommitStatusCreated, body, valid); code != http.StatusAccepted {
		t.Errorf("signed delivery: status %d, want 202", code)
	}
	eventually(t, 10*time.Second, "the signed delivery to wake the pool", func() (bool, string) {
		after := pollRequested()
		return after != before, fmt.Sprintf("poll requested at %q", after)
	})
	return answers.String()
}

// checkCapturesAreReal guards against a scan that passes because it saw nothing: verbose
// logs, events, statuses and metrics were captured, and Bitbucket handed out credentials.
func checkCapturesAreReal(t *testing.T, captures map[string]string, tokens, bearerCalls, runnerSecrets int) {
	t.Helper()
	expect := map[string]string{
		"operator logs":       "bitbucket request", // a V(1) line of the Bitbucket client
		"bbsim logs":          "runner",
		"events":              "RunnerCreated",
		"operator metrics":    "runnerpool_webhook_deliveries_total",
		"controller metrics":  "controller_runtime_reconcile_total",
		"watched RunnerPools": "conditions",
		"watched Runners":     "uuid",
		"watched Pods":        "OAUTH_CLIENT_SECRET",
	}
	for source, want := range expect {
		if !strings.Contains(captures[source], want) {
			t.Errorf("capture %q (%d bytes) lacks %q: the scan would prove nothing about it", source, len(captures[source]), want)
		}
	}
	if tokens == 0 || bearerCalls == 0 {
		t.Errorf("bbsim issued %d tokens and saw %d Bearer calls: the OAuth path was not exercised", tokens, bearerCalls)
	}
	if runnerSecrets < 4 {
		t.Errorf("only %d runner OAuth client secrets seen, want at least 4", runnerSecrets)
	}
}

func eventsText(t *testing.T, sys *harness.System) string {
	t.Helper()
	var core corev1.EventList
	if err := sys.Client.List(t.Context(), &core); err != nil {
		t.Fatalf("list events: %v", err)
	}
	var events eventsv1.EventList
	if err := sys.Client.List(t.Context(), &events); err != nil {
		t.Fatalf("list events.k8s.io events: %v", err)
	}
	return jsonText(t, core) + jsonText(t, events)
}

func jsonText(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return string(b)
}

// valueSet collects distinct non-empty values from any goroutine.
type valueSet struct {
	mu   sync.Mutex
	seen map[string]bool
	list []string
}

func (s *valueSet) add(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	for _, v := range values {
		if v != "" && !s.seen[v] {
			s.seen[v] = true
			s.list = append(s.list, v)
		}
	}
}

func (s *valueSet) values() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.list...)
}

func (s *valueSet) len() int { return len(s.values()) }

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) add() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
