package bitbucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

func TestRunnerLifecycleInWorkspaceAndRepository(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{ConnectDelay: -1})
	c := env.client(env.config())
	ctx := ctxTimeout(t)

	for _, scope := range []Scope{wsScope, {Workspace: bbsim.DefaultWorkspaceUUID, Repository: bbsim.DefaultRepositoryUUID}} {
		t.Run(scope.String(), func(t *testing.T) {
			created, err := c.CreateRunner(ctx, scope, "pool-a-1", []string{"self.hosted", "linux", "gpu"})
			if err != nil {
				t.Fatalf("CreateRunner: %v", err)
			}
			if !strings.HasPrefix(created.UUID, "{") || created.OAuthClient == nil || created.OAuthClient.ID == "" || created.OAuthClient.Secret == "" {
				t.Fatalf("create returned %+v, want a braced uuid and OAuth client credentials", created)
			}
			if created.State.Status != RunnerStatusUnregistered {
				t.Errorf("new runner status = %s, want UNREGISTERED", created.State.Status)
			}

			got, err := c.GetRunner(ctx, scope, created.UUID)
			if err != nil {
				t.Fatalf("GetRunner: %v", err)
			}
			if got.Name != "pool-a-1" || !got.HasLabel("gpu") || (got.OAuthClient != nil && got.OAuthClient.Secret != "") {
				t.Errorf("GetRunner = %+v, want the runner without its secret", got)
			}

			if err := env.sim.ConnectRunner(created.UUID); err != nil {
				t.Fatalf("ConnectRunner: %v", err)
			}
			got, err = c.GetRunner(ctx, scope, created.UUID)
			if err != nil || !got.Idle() {
				t.Fatalf("connected runner: %+v, %v; want ONLINE and idle", got, err)
			}

			if err := c.SetRunnerState(ctx, scope, created.UUID, RunnerStatusDisabled); err != nil {
				t.Fatalf("disable: %v", err)
			}
			if got, _ = c.GetRunner(ctx, scope, created.UUID); got.State.Status != RunnerStatusDisabled {
				t.Errorf("after disable status = %s", got.State.Status)
			}
			if err := c.SetRunnerState(ctx, scope, created.UUID, RunnerStatusEnabled); err != nil {
				t.Fatalf("enable: %v", err)
			}

			runners, err := c.ListRunners(ctx, scope)
			if err != nil {
				t.Fatalf("ListRunners: %v", err)
			}
			if !slices.ContainsFunc(runners, func(r Runner) bool { return r.UUID == created.UUID }) {
				t.Errorf("ListRunners does not contain %s", created.UUID)
			}

			if err := c.DeleteRunner(ctx, scope, created.UUID); err != nil {
				t.Fatalf("DeleteRunner: %v", err)
			}
			_, err = c.GetRunner(ctx, scope, created.UUID)
			mustErr(t, err, ErrNotFound)
			mustErr(t, c.DeleteRunner(ctx, scope, created.UUID), ErrNotFound)

			env.assertNoSecrets([]string{created.OAuthClient.Secret, bbsim.DefaultClientSecret, currentToken(c)})
		})
	}

	for _, r := range env.rec.all() {
		if r.userAgent != "runnerpool-operator/test" {
			t.Errorf("User-Agent = %q", r.userAgent)
		}
		if strings.Contains(r.rawURI, "internal/") && (strings.Contains(r.rawURI, "{") || !strings.Contains(r.rawURI, "%7B")) {
			t.Errorf("runner path not sent with percent-encoded braces: %s", r.rawURI)
		}
	}
}

func TestBusyRunnerShowsItsStep(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{ConnectDelay: -1})
	c := env.client(env.config())
	ctx := ctxTimeout(t)
	r, err := c.CreateRunner(ctx, wsScope, "busy", []string{"self.hosted", "linux", "busy.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.sim.ConnectRunner(r.UUID); err != nil {
		t.Fatal(err)
	}
	if _, err := env.sim.Enqueue(bbsim.EnqueueRequest{Count: 1, RunsOn: []string{"self.hosted", "busy.test"}, Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the runner to pick the step", func() bool {
		env.sim.Tick()
		got, err := c.GetRunner(ctx, wsScope, r.UUID)
		return err == nil && got.Busy()
	})
	got, _ := c.GetRunner(ctx, wsScope, r.UUID)
	if got.Idle() || len(got.State.Step.Raw) == 0 {
		t.Errorf("busy runner: %+v", got.State)
	}
}

func TestListRunnersFollowsEveryPage(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{RunnerLimit: 500})
	for i := range 250 {
		if _, err := env.sim.CreateRunner(bbsim.CreateRunnerRequest{Name: fmt.Sprintf("r%d", i), Labels: defaultLabels}); err != nil {
			t.Fatal(err)
		}
	}
	c := env.client(env.config())
	runners, err := c.ListRunners(ctxTimeout(t), wsScope)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range runners {
		seen[r.UUID] = true
	}
	if len(runners) != 250 || len(seen) != 250 {
		t.Errorf("got %d runners (%d distinct), want 250", len(runners), len(seen))
	}
	lists := env.rec.count(func(r seenRequest) bool { return strings.HasSuffix(r.path, "/runners") })
	if lists != 3 {
		t.Errorf("list requests = %d, want 3 pages of 100", lists)
	}
}

// The simulator never loops, so a bare handler plays a server that keeps
// answering with the same next link.
func TestListRunnersStopsOnAPaginationLoop(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"values": []any{map[string]any{"uuid": "{r}"}},
			"next":   srv.URL + "/internal/workspaces/%7Bws%7D/pipelines-config/runners?page=2",
		})
	}))
	defer srv.Close()
	c, err := New(Config{BaseURL: srv.URL, Credentials: Credentials{AccessToken: "t"}, Budgets: NewBudgetRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListRunners(ctxTimeout(t), Scope{Workspace: "{ws}"})
	if err == nil || !strings.Contains(err.Error(), "pagination loop") {
		t.Fatalf("ListRunners = %v, want a pagination loop error", err)
	}
}

func TestOAuthTokenIsReusedAndRenewedBeforeExpiry(t *testing.T) {
	clock := newFakeClock()
	env := newSimEnv(t, bbsim.Options{Now: clock.Now, TokenTTL: 2 * time.Hour})
	cfg := env.config()
	cfg.Now = clock.Now
	c := env.client(cfg)
	ctx := ctxTimeout(t)

	for range 3 {
		if _, err := c.ListRunners(ctx, wsScope); err != nil {
			t.Fatal(err)
		}
	}
	if n := env.rec.count(tokenCalls); n != 1 {
		t.Fatalf("token fetches = %d, want 1 for three calls", n)
	}
	// 5 minutes before expiry the token counts as expired on our side, so
	// Bitbucket never gets to answer "Access token expired.".
	clock.Advance(2*time.Hour - 4*time.Minute)
	if _, err := c.ListRunners(ctx, wsScope); err != nil {
		t.Fatal(err)
	}
	if n := env.rec.count(tokenCalls); n != 2 {
		t.Errorf("token fetches = %d, want a renewal before expiry", n)
	}
	if n := env.rec.count(func(r seenRequest) bool { return r.status == http.StatusUnauthorized }); n != 0 {
		t.Errorf("%d requests were answered 401", n)
	}
}

func TestOAuthRefreshesOnceOn401(t *testing.T) {
	serverClock := newFakeClock()
	env := newSimEnv(t, bbsim.Options{Now: serverClock.Now, TokenTTL: time.Hour})
	c := env.client(env.config()) // the client's own clock stands still
	ctx := ctxTimeout(t)
	if _, err := c.ListRunners(ctx, wsScope); err != nil {
		t.Fatal(err)
	}
	oldToken := currentToken(c)
	serverClock.Advance(2 * time.Hour) // Bitbucket considers the token expired

	if _, err := c.ListRunners(ctx, wsScope); err != nil {
		t.Fatalf("ListRunners after server-side expiry: %v", err)
	}
	if n := env.rec.count(func(r seenRequest) bool { return r.status == http.StatusUnauthorized }); n != 1 {
		t.Errorf("401 answers = %d, want exactly 1", n)
	}
	if n := env.rec.count(tokenCalls); n != 2 {
		t.Errorf("token fetches = %d, want 2", n)
	}
	env.assertNoSecrets([]string{oldToken, currentToken(c), bbsim.DefaultClientSecret})
}

func TestConcurrentCallersShareOneTokenFetch(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{Faults: bbsim.Faults{Latency: 20 * time.Millisecond}})
	c := env.client(env.config())
	ctx := ctxTimeout(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := c.ListRunners(ctx, wsScope)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := env.rec.count(tokenCalls); n != 1 {
		t.Errorf("token fetches = %d, want 1 shared by 20 callers", n)
	}
}

func TestRateLimitHonoursRetryAfter(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{RetryAfter: time.Second, Faults: bbsim.Faults{Force429: true}})
	apiRequests := 0
	env.rec.setBefore(func(r *http.Request, n int) {
		if !strings.HasPrefix(r.URL.Path, "/site/") {
			apiRequests++
			if apiRequests == 2 { // the storm is over for the retry
				env.sim.SetFaults(bbsim.Faults{})
			}
		}
	})
	reg := prometheus.NewRegistry()
	metrics, err := RegisterMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := env.config()
	cfg.Metrics = metrics
	c := env.client(cfg)
	if _, err := c.ListRunners(ctxTimeout(t), wsScope); err != nil {
		t.Fatalf("ListRunners: %v", err)
	}
	var api []seenRequest
	for _, r := range env.rec.all() {
		if apiCalls(r) {
			api = append(api, r)
		}
	}
	if len(api) != 2 || api[0].status != http.StatusTooManyRequests || api[1].status != http.StatusOK {
		t.Fatalf("API requests %+v, want one 429 then one 200", api)
	}
	// Correctness, not speed: the test backoff is a few ms, so a gap of a
	// second can only come from the Retry-After header.
	if gap := api[1].at.Sub(api[0].at); gap < 900*time.Millisecond {
		t.Errorf("retried after %s, before Retry-After (1s)", gap)
	}
	if got := counterValue(t, metrics.rateLimitWaits.WithLabelValues("runners.list")); got != 1 {
		t.Errorf("rate limit waits = %v, want 1", got)
	}
}

func TestRateLimitLongerThanTheRetryBudgetIsReturned(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{RetryAfter: time.Minute, Faults: bbsim.Faults{Force429: true}})
	c := env.client(env.config()) // MaxRetryWait 5s
	ctx := ctxTimeout(t)
	_, err := c.ListRunners(ctx, wsScope)
	mustErr(t, err, ErrRateLimited)
	if d, ok := RetryAfter(err); !ok || d != time.Minute {
		t.Errorf("RetryAfter = %s, %v; want 1m", d, ok)
	}
	sent := env.rec.count(apiCalls)
	// Bitbucket asked for a minute of quiet: even a high priority call is held
	// back locally instead of earning another 429.
	_, err = c.CreateRunner(ctx, wsScope, "x", defaultLabels)
	mustErr(t, err, ErrBudgetExhausted)
	if env.rec.count(apiCalls) != sent {
		t.Error("a request was sent during the Retry-After period")
	}
}

func TestRateLimitWithoutRetryAfterHoldsPollsBack(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{HourlyLimit: 1})
	cfg := env.config()
	cfg.ThrottleMin = 50 * time.Millisecond
	c := env.client(cfg)
	ctx := ctxTimeout(t)
	if _, err := c.ListRunners(ctx, wsScope); err != nil {
		t.Fatal(err)
	}
	// The 429 says Bitbucket's window is full although ours holds one
	// request: the call returns at once with the credential's backoff, and
	// nothing is sent again in the call.
	_, err := c.ListRunners(ctx, wsScope)
	mustErr(t, err, ErrRateLimited)
	if d, ok := RetryAfter(err); !ok || d != cfg.ThrottleMin {
		t.Errorf("RetryAfter = %s, %v; want the first backoff step %s", d, ok, cfg.ThrottleMin)
	}
	if n := env.rec.count(func(r seenRequest) bool { return r.status == http.StatusTooManyRequests }); n != 1 {
		t.Errorf("429 answers = %d, want 1", n)
	}
	time.Sleep(2 * cfg.ThrottleMin)
	// After the backoff, polls are still held back until the reserve frees.
	_, err = c.ListRunners(ctx, wsScope)
	mustErr(t, err, ErrBudgetExhausted)
	if d, ok := RetryAfter(err); !ok || d < 5*time.Minute {
		t.Errorf("RetryAfter = %s, %v; want minutes: polls wait until the reserve is free again", d, ok)
	}
	// The first guessed request leaves the window after the backoff.
	if got := c.Budget().Remaining(); got > 1 {
		t.Errorf("Remaining = %d after a 429, want at most 1", got)
	}
	// A create still gets the first slot that frees (and earns another 429:
	// bbsim's limit of 1 is still spent), which doubles the backoff.
	sent := env.rec.count(apiCalls)
	if _, err = c.CreateRunner(ctx, wsScope, "x", defaultLabels); err == nil {
		t.Fatal("CreateRunner succeeded past bbsim's limit")
	}
	if env.rec.count(apiCalls) != sent+1 {
		t.Errorf("requests sent by the create = %d, want 1", env.rec.count(apiCalls)-sent)
	}
	if th := c.Budget().Throttle(); th.Strikes != 2 || th.Wait > 2*cfg.ThrottleMin || th.Wait <= cfg.ThrottleMin/2 {
		t.Errorf("throttle after two 429s = %+v, want 2 strikes and a wait of about %s", th, 2*cfg.ThrottleMin)
	}
}

func TestRateLimitHeadersCorrectTheBudget(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{HourlyLimit: 50, AccessTokens: []string{"token-for-headers"}})
	cfg := env.config()
	cfg.Credentials = Credentials{AccessToken: "token-for-headers"}
	c := env.client(cfg)
	ctx := ctxTimeout(t)
	if _, err := c.ListRunners(ctx, wsScope); err != nil {
		t.Fatal(err)
	}
	if got := c.Budget().Limit(); got != 50 {
		t.Errorf("Limit = %d, want Bitbucket's announced 50", got)
	}
	if got := c.Budget().Used(); got != 1 {
		t.Errorf("Used = %d, want 1 while Bitbucket is not near its limit", got)
	}
	// Another tool spends the credential behind our back; the header tells.
	for i := 0; i < 40; i++ {
		req := httptest.NewRequest(http.MethodGet, "/internal/workspaces/"+url.PathEscape(wsScope.Workspace)+"/pipelines-config/runners", nil)
		req.Header.Set("Authorization", "Bearer token-for-headers")
		rec := httptest.NewRecorder()
		env.sim.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("request behind the client's back: %d %s", rec.Code, rec.Body)
		}
	}
	if _, err := c.ListRunners(ctx, wsScope); err != nil {
		t.Fatal(err)
	}
	if got := c.Budget().Used(); got < 41 {
		t.Errorf("Used = %d after X-RateLimit-NearLimit, want more than 80%% of 50", got)
	}
}

func TestServerErrorsAreRetriedForIdempotentCallsOnly(t *testing.T) {
	tests := []struct {
		name     string
		code     int
		call     func(ctx context.Context, c *Client) error
		attempts int
	}{
		{"GET 503", 503, func(ctx context.Context, c *Client) error { _, err := c.ListRunners(ctx, wsScope); return err }, DefaultMaxAttempts},
		{"GET 500", 500, func(ctx context.Context, c *Client) error { _, err := c.GetRunner(ctx, wsScope, "{x}"); return err }, DefaultMaxAttempts},
		{"PUT 502", 502, func(ctx context.Context, c *Client) error {
			return c.SetRunnerState(ctx, wsScope, "{x}", RunnerStatusDisabled)
		}, DefaultMaxAttempts},
		{"DELETE 500", 500, func(ctx context.Context, c *Client) error { return c.DeleteRunner(ctx, wsScope, "{x}") }, DefaultMaxAttempts},
		{"POST 500 is not resent", 500, func(ctx context.Context, c *Client) error {
			_, err := c.CreateRunner(ctx, wsScope, "x", defaultLabels)
			return err
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newSimEnv(t, bbsim.Options{Faults: bbsim.Faults{ErrorRate: 1, ErrorCodes: []int{tt.code}}})
			cfg := env.config()
			cfg.Credentials = Credentials{AccessToken: "tok"}
			c := env.client(cfg)
			err := tt.call(ctxTimeout(t), c)
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tt.code {
				t.Fatalf("error = %v, want an APIError with status %d", err, tt.code)
			}
			if n := env.rec.count(apiCalls); n != tt.attempts {
				t.Errorf("attempts = %d, want %d", n, tt.attempts)
			}
		})
	}
}

func TestServerErrorThenSuccess(t *testing.T) {
	tests := []struct {
		name  string
		creds Credentials
	}{
		{"API call fails twice", Credentials{AccessToken: "tok"}},
		// The token endpoint fails too; nothing reached the API, so that is
		// retried like any transient failure.
		{"token fetch fails twice", Credentials{OAuthClientID: bbsim.DefaultClientID, OAuthClientSecret: bbsim.DefaultClientSecret}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newSimEnv(t, bbsim.Options{AccessTokens: []string{"tok"}, Faults: bbsim.Faults{ErrorRate: 1, ErrorCodes: []int{502}}})
			env.rec.setBefore(func(r *http.Request, n int) {
				if n == 3 {
					env.sim.SetFaults(bbsim.Faults{})
				}
			})
			cfg := env.config()
			cfg.Credentials = tt.creds
			if _, err := env.client(cfg).ListRunners(ctxTimeout(t), wsScope); err != nil {
				t.Fatalf("ListRunners: %v", err)
			}
			statuses := []int{}
			for _, r := range env.rec.all() {
				statuses = append(statuses, r.status)
			}
			if !slices.Equal(statuses[:3], []int{502, 502, 200}) {
				t.Errorf("statuses = %v, want 502, 502, 200...", statuses)
			}
		})
	}
}

func TestDroppedConnection(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{Faults: bbsim.Faults{DropRate: 1}})
	cfg := env.config()
	cfg.Credentials = Credentials{AccessToken: "tok"}
	c := env.client(cfg)
	ctx := ctxTimeout(t)

	_, err := c.CreateRunner(ctx, wsScope, "x", defaultLabels)
	if err == nil || !strings.Contains(err.Error(), "may have reached Bitbucket") {
		t.Fatalf("CreateRunner = %v, want a not-retried error", err)
	}
	if n := env.rec.count(apiCalls); n != 1 {
		t.Errorf("POST sent %d times after the server read it, want 1", n)
	}
	_, err = c.ListRunners(ctx, wsScope)
	if err == nil {
		t.Fatal("ListRunners succeeded through dropped connections")
	}
	if n := env.rec.count(apiCalls); n != 1+DefaultMaxAttempts {
		t.Errorf("GET attempts = %d, want %d", n-1, DefaultMaxAttempts)
	}
}

func TestCreateIsRetriedWhenTheConnectionWasNeverMade(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := listener.Addr().String()
	_ = listener.Close() // nothing listens: every dial is refused

	reg := prometheus.NewRegistry()
	metrics, err := RegisterMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{
		BaseURL: "http://" + addr, Credentials: Credentials{AccessToken: "tok"}, Metrics: metrics,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Budgets: NewBudgetRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateRunner(ctxTimeout(t), wsScope, "x", defaultLabels)
	if err == nil || strings.Contains(err.Error(), "may have reached") {
		t.Fatalf("CreateRunner = %v, want a plain connection error", err)
	}
	if got := counterValue(t, metrics.retries.WithLabelValues("runners.create", "network_error")); got != DefaultMaxAttempts-1 {
		t.Errorf("create retries = %v, want %d", got, DefaultMaxAttempts-1)
	}
	if used := c.Budget().Used(); used != 0 {
		t.Errorf("budget Used = %d, want 0: no attempt reached a server", used)
	}
}

func TestContextCancelStopsABackoffSleep(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{RetryAfter: 30 * time.Second, Faults: bbsim.Faults{Force429: true}})
	cfg := env.config()
	cfg.MaxRetryWait = time.Hour
	c := env.client(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	env.rec.setBefore(func(r *http.Request, n int) {
		if !strings.HasPrefix(r.URL.Path, "/site/") {
			time.AfterFunc(50*time.Millisecond, cancel)
		}
	})
	done := make(chan error, 1)
	go func() {
		_, err := c.ListRunners(ctx, wsScope)
		done <- err
	}()
	select {
	case err := <-done:
		mustErr(t, err, context.Canceled)
		mustErr(t, err, ErrRateLimited) // the last answer is kept for the caller
	case <-time.After(15 * time.Second):
		t.Fatal("ListRunners kept sleeping after its context was cancelled")
	}
}

func TestBudgetReserveAndExhaustion(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{})
	cfg := env.config()
	cfg.HourlyLimit = 10 // reserve 1
	c := env.client(cfg)
	other := env.client(cfg) // same credential, same registry: same budget
	if c.Budget() != other.Budget() {
		t.Fatal("two clients for one credential have separate budgets")
	}
	ctx := ctxTimeout(t)
	for i := range 9 {
		client := c
		if i%2 == 1 {
			client = other
		}
		if _, err := client.ListRunners(ctx, wsScope); err != nil {
			t.Fatalf("poll %d: %v", i, err)
		}
	}
	if c.Budget().Used() != 9 || c.Budget().Remaining() != 1 {
		t.Fatalf("Used/Remaining = %d/%d, want 9/1", c.Budget().Used(), c.Budget().Remaining())
	}
	sent := env.rec.count(apiCalls)
	_, err := c.ListRunners(ctx, wsScope)
	mustErr(t, err, ErrBudgetExhausted)
	if d, ok := RetryAfter(err); !ok || d <= 0 || d > time.Hour {
		t.Errorf("RetryAfter = %s, %v", d, ok)
	}
	if env.rec.count(apiCalls) != sent {
		t.Error("a low priority request was sent into the reserve")
	}

	created, err := c.CreateRunner(ctx, wsScope, "needed", defaultLabels)
	if err != nil {
		t.Fatalf("create must use the reserve: %v", err)
	}
	err = other.DeleteRunner(ctx, wsScope, created.UUID)
	mustErr(t, err, ErrBudgetExhausted)
	var budgetErr *BudgetExhaustedError
	if !errors.As(err, &budgetErr) || budgetErr.Priority != PriorityHigh {
		t.Errorf("error %v, want a high priority budget refusal", err)
	}
}

func TestHighPriorityReadUsesTheReserve(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{})
	cfg := env.config()
	cfg.HourlyLimit = 2 // reserve 1
	c := env.client(cfg)
	ctx := ctxTimeout(t)
	if _, err := c.ListRunners(ctx, wsScope); err != nil {
		t.Fatal(err)
	}
	_, err := c.ListRunners(ctx, wsScope)
	mustErr(t, err, ErrBudgetExhausted)
	if _, err := c.ListRunners(WithPriority(ctx, PriorityHigh), wsScope); err != nil {
		t.Fatalf("high priority lookup: %v", err)
	}
}

func TestTypedErrors(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{
		RunnerLimit:    2,
		AccessTokens:   []string{"good-token-value"},
		ReadOnlyTokens: []string{"read-only-token-value"},
		BasicUsers:     map[string]string{"me": "app-password-value"},
	})
	ctx := ctxTimeout(t)
	withCreds := func(creds Credentials) *Client {
		cfg := env.config()
		cfg.Credentials = creds
		return env.client(cfg)
	}
	good := withCreds(Credentials{AccessToken: "good-token-value"})

	t.Run("not found", func(t *testing.T) {
		_, err := good.GetRunner(ctx, wsScope, "{00000000-0000-4000-8000-000000000000}")
		mustErr(t, err, ErrNotFound)
		_, err = good.ListRunners(ctx, Scope{Workspace: "{00000000-0000-4000-8000-000000000000}"})
		mustErr(t, err, ErrNotFound)
	})
	t.Run("limit reached", func(t *testing.T) {
		for i := range 2 {
			if _, err := good.CreateRunner(ctx, wsScope, fmt.Sprintf("r%d", i), defaultLabels); err != nil {
				t.Fatal(err)
			}
		}
		_, err := good.CreateRunner(ctx, wsScope, "one-too-many", defaultLabels)
		mustErr(t, err, ErrLimitReached)
		if !IsLimitReached(err) || !IsConflict(err) {
			t.Errorf("IsLimitReached/IsConflict false for %v", err)
		}
	})
	t.Run("bad request is not a limit", func(t *testing.T) {
		_, err := good.CreateRunner(ctx, Scope{Workspace: bbsim.DefaultWorkspaceUUID, Repository: bbsim.DefaultRepositoryUUID}, "x", []string{"linux"})
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || IsLimitReached(err) {
			t.Fatalf("error = %v, want a plain 400", err)
		}
	})
	t.Run("unauthorized access token", func(t *testing.T) {
		_, err := withCreds(Credentials{AccessToken: "wrong-token-value"}).ListRunners(ctx, wsScope)
		mustErr(t, err, ErrUnauthorized)
		if !IsUnauthorized(err) {
			t.Error("IsUnauthorized false")
		}
	})
	t.Run("unauthorized basic", func(t *testing.T) {
		_, err := withCreds(Credentials{Username: "me", Password: "wrong-password-value"}).ListRunners(ctx, wsScope)
		mustErr(t, err, ErrUnauthorized)
		if _, err := withCreds(Credentials{Username: "me", Password: "app-password-value"}).ListRunners(ctx, wsScope); err != nil {
			t.Errorf("basic auth: %v", err)
		}
	})
	t.Run("unauthorized oauth consumer", func(t *testing.T) {
		before := env.rec.count(apiCalls)
		_, err := withCreds(Credentials{OAuthClientID: bbsim.DefaultClientID, OAuthClientSecret: "wrong-secret-value"}).ListRunners(ctx, wsScope)
		mustErr(t, err, ErrUnauthorized)
		if env.rec.count(apiCalls) != before {
			t.Error("an API call was sent without a token")
		}
	})
	t.Run("forbidden", func(t *testing.T) {
		_, err := withCreds(Credentials{AccessToken: "read-only-token-value"}).CreateRunner(ctx, wsScope, "x", defaultLabels)
		mustErr(t, err, ErrForbidden)
		if !IsForbidden(err) || !strings.Contains(err.Error(), "runners.create") {
			t.Errorf("error %q lacks the endpoint", err)
		}
	})
	env.assertNoSecrets([]string{"good-token-value", "wrong-token-value", "read-only-token-value", "app-password-value",
		"wrong-password-value", "wrong-secret-value", bbsim.DefaultClientSecret})
}

func TestSecretsNeverInErrorsOrLogs(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{Faults: bbsim.Faults{ErrorRate: 0.5, Seed: 7}, RunnerLimit: 500})
	c := env.client(env.config())
	ctx := ctxTimeout(t)
	var texts, secrets []string
	for i := range 10 {
		r, err := c.CreateRunner(ctx, wsScope, fmt.Sprintf("r%d", i), defaultLabels)
		if err != nil {
			texts = append(texts, err.Error())
			continue
		}
		secrets = append(secrets, r.OAuthClient.Secret)
		// A runner printed by mistake must not show its secret either.
		texts = append(texts, fmt.Sprintf("%+v %v", *r, r))
		if _, err := c.GetRunner(ctx, wsScope, r.UUID); err != nil {
			texts = append(texts, err.Error())
		}
	}
	if len(secrets) == 0 {
		t.Fatal("no runner was created: the check below proves nothing")
	}
	env.assertNoSecrets(append(secrets, bbsim.DefaultClientSecret, currentToken(c)), texts...)
	if !strings.Contains(env.logs.text(), "bitbucket request") {
		t.Error("no request was logged: the check above proves nothing")
	}
}

func TestRedactScrubsOwnSecrets(t *testing.T) {
	c, err := New(Config{Credentials: Credentials{Username: "u", Password: "hunter2-value"}, Budgets: NewBudgetRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.redact("server said: bad password hunter2-value"); strings.Contains(got, "hunter2") {
		t.Errorf("redact left the secret: %q", got)
	}
}

func TestQueueReads(t *testing.T) {
	env := newSimEnv(t, bbsim.Options{})
	c := env.client(env.config())
	ctx := ctxTimeout(t)
	if _, err := env.sim.Enqueue(bbsim.EnqueueRequest{Count: 3, RunsOn: []string{"self.hosted", "linux", "gpu"}, Duration: time.Hour, StepsPerPipeline: 3}); err != nil {
		t.Fatal(err)
	}

	var pipelines []Pipeline
	var queueReader QueueReader = c
	pipelines, err := queueReader.ListPipelines(ctx, bbsim.DefaultWorkspaceSlug, bbsim.DefaultRepositorySlug, RunningPipelineStatuses...)
	if err != nil {
		t.Fatal(err)
	}
	if len(pipelines) != 1 || !pipelines[0].Running() || pipelines[0].Target.Commit == "" {
		t.Fatalf("pipelines = %+v, want one running pipeline with a commit", pipelines)
	}
	steps, err := queueReader.ListSteps(ctx, bbsim.DefaultWorkspaceSlug, bbsim.DefaultRepositorySlug, pipelines[0].UUID)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 3 || !steps[0].Waiting() {
		t.Fatalf("steps = %+v, want 3 waiting", steps)
	}
	yml, err := queueReader.GetFile(ctx, bbsim.DefaultWorkspaceUUID, bbsim.DefaultRepositoryUUID, pipelines[0].Target.Commit, "bitbucket-pipelines.yml")
	if err != nil {
		t.Fatal(err)
	}
	runsOn, err := ParsePipelineRunsOn(yml)
	if err != nil {
		t.Fatalf("parse bbsim's pipeline file: %v\n%s", err, yml)
	}
	if len(runsOn) != 3 || !slices.Contains(runsOn[0], "gpu") {
		t.Errorf("runs-on = %q", runsOn)
	}
	_, err = c.GetFile(ctx, bbsim.DefaultWorkspaceUUID, bbsim.DefaultRepositoryUUID, pipelines[0].Target.Commit, "missing.yml")
	mustErr(t, err, ErrNotFound)

	completed, err := c.ListPipelines(ctx, bbsim.DefaultWorkspaceSlug, bbsim.DefaultRepositorySlug, "SUCCESSFUL")
	if err != nil || len(completed) != 0 {
		t.Errorf("completed pipelines = %v, %v; want none", completed, err)
	}

	ws, err := c.GetWorkspace(ctx, bbsim.DefaultWorkspaceSlug)
	if err != nil || ws.UUID != bbsim.DefaultWorkspaceUUID {
		t.Errorf("GetWorkspace = %+v, %v", ws, err)
	}
	repo, err := c.GetRepository(ctx, bbsim.DefaultWorkspaceSlug, bbsim.DefaultRepositoryUUID)
	if err != nil || repo.Slug != bbsim.DefaultRepositorySlug {
		t.Errorf("GetRepository = %+v, %v", repo, err)
	}
	repos, err := c.ListRepositories(ctx, bbsim.DefaultWorkspaceUUID, `project.key="CI"`)
	if err != nil || len(repos) != 1 || repos[0].UUID != bbsim.DefaultRepositoryUUID {
		t.Errorf("ListRepositories = %+v, %v", repos, err)
	}
	for _, r := range env.rec.all() {
		if strings.Contains(r.path, "/pipelines") && r.method == http.MethodGet && strings.HasSuffix(r.path, "/pipelines/") {
			if !strings.Contains(r.rawURI, "sort=-created_on") || !strings.Contains(r.rawURI, "pagelen=100") {
				t.Errorf("pipeline list without sort/pagelen: %s", r.rawURI)
			}
		}
	}
}

func TestMetricsUseRouteTemplatesAndRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	first, err := RegisterMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	second, err := RegisterMetrics(reg)
	if err != nil {
		t.Fatalf("second registration: %v", err)
	}
	if first.requests != second.requests {
		t.Error("second registration did not reuse the registered collectors")
	}

	env := newSimEnv(t, bbsim.Options{})
	cfg := env.config()
	cfg.Metrics = second
	c := env.client(cfg)
	ctx := ctxTimeout(t)
	r, err := c.CreateRunner(ctx, wsScope, "m", defaultLabels)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetRunner(ctx, wsScope, r.UUID); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, first.requests.WithLabelValues("runners.get", "GET", "200")); got != 1 {
		t.Errorf("runners.get 200 = %v, want 1", got)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sawBudget bool
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.ContainsAny(l.GetValue(), "{}/") {
					t.Errorf("%s has a raw path or uuid in label %s=%q", f.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
		if f.GetName() == "runnerpool_bitbucket_budget_remaining" {
			sawBudget = len(f.GetMetric()) == 1 && f.GetMetric()[0].GetGauge().GetValue() == float64(c.Budget().Remaining())
		}
	}
	if !sawBudget {
		t.Error("budget_remaining gauge missing or wrong")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
