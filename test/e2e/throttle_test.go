package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// throttledCalls is the number of API requests bbsim received with the throttled credential.
func throttledCalls() int {
	n := 0
	for _, c := range sys.BBSim.State().CallsByCredential[throttledCredential] {
		n += c
	}
	return n
}

// TestAThrottledCredentialBacksOffAndOnlineRunnersKeepWorking is issue 12's case: Bitbucket
// answers every request of a pool's credential with 429 and no Retry-After. Before, the
// operator sent a runner create about every 3 s and logged nothing. Now each 429 in a row
// doubles the credential's quiet time (5 s, 10 s, 20 s, 40 s, ... the operator's defaults, so
// the test watches 80 s: probes at about 0, 5, 15, 35 and 75 s), the pool says so in a
// condition and a Warning event, and its ONLINE runner keeps taking steps, which go through
// bbsim's agent API and not the throttled credential.
func TestAThrottledCredentialBacksOffAndOnlineRunnersKeepWorking(t *testing.T) {
	ns := namespace(t)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "throttled", Namespace: ns},
		StringData: map[string]string{v1alpha1.SecretKeyAccessToken: throttledToken}}
	if err := sys.Client.Create(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
	const label = "throttled"
	pool := harness.Pool(ns, label, 1, 3)
	pool.Spec.Bitbucket.CredentialsSecretRef.Name = secret.Name
	pool = createPool(t, pool)
	onlyRunner(t, ns, pool)

	// The throttle starts right after an observation, and the pool is asked for two more
	// runners while that observation is fresh: the Runner objects are made and their creates
	// are the requests that meet the 429s, as in the case reported. (Polls meet them too, but
	// the window fill of a 429 holds polls back for minutes anyway.)
	observed := getPool(t, ns, pool.Name).Status.LastObservedTime
	eventually(t, 30*time.Second, "a fresh observation", func() (bool, string) {
		p := getPool(t, ns, pool.Name)
		return p.Status.LastObservedTime != nil && (observed == nil || p.Status.LastObservedTime.After(observed.Time)), "none yet"
	})
	sys.BBSim.Throttle(throttledCredential, true)
	t.Cleanup(func() { sys.BBSim.Throttle(throttledCredential, false) })
	start, before := time.Now(), throttledCalls()
	p := getPool(t, ns, pool.Name)
	p.Spec.MinRunners = 3
	if err := sys.Client.Update(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the pool to ask for two more runners", func() (bool, string) {
		var list v1alpha1.RunnerList
		n := countObjects(t, ns, &list, client.MatchingLabels{v1alpha1.LabelPool: pool.Name})
		return n == 3, fmt.Sprintf("%d Runners", n)
	})
	// Three steps for the one ONLINE runner.
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 3, RunsOn: []string{"self.hosted", "linux", label}, Duration: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}

	const window = 80 * time.Second
	var sentAt []time.Duration // when bbsim's count of the credential's requests went up
	last := before
	for time.Since(start) < window {
		if n := throttledCalls(); n > last {
			for i := last; i < n; i++ {
				sentAt = append(sentAt, time.Since(start).Round(100*time.Millisecond))
			}
			last = n
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("requests with the throttled credential in %s: %d at %v", window, len(sentAt), sentAt)
	// At 3 s a request (the old behaviour) this would be about 27; two creates are refused in
	// parallel at first, then one probe at about 5, 15, 35 and 75 s.
	if len(sentAt) > 9 {
		t.Errorf("%d requests in %s of 429s, want at most 9: the credential does not back off (%v)", len(sentAt), window, sentAt)
	}
	if n := len(sentAt); n >= 3 {
		if gap, first := sentAt[n-1]-sentAt[n-2], sentAt[1]-sentAt[0]; gap < 15*time.Second || gap <= first {
			t.Errorf("the last gap between requests is %s after a first of %s: the waits do not grow (%v)", gap, first, sentAt)
		}
	}

	th := bitbucket.ThrottleOf(throttledClient(t))
	if th.Strikes < 3 {
		t.Errorf("the credential's 429 streak is %+v, want at least 3 strikes", th)
	}
	p = getPool(t, ns, pool.Name)
	if c := condition(p, v1alpha1.ConditionScalingActive); c == nil || c.Status != "False" || c.Reason != controllers.ReasonRateLimited || !strings.Contains(c.Message, "429") {
		t.Errorf("ScalingActive = %+v, want False, RateLimited, naming the 429s", c)
	}
	if ev := events(t, ns, pool.Name); !slices.ContainsFunc(ev, func(e string) bool { return strings.HasPrefix(e, controllers.ReasonThrottled+":") }) {
		t.Errorf("no %s Warning event: %v", controllers.ReasonThrottled, ev)
	}
	// The ONLINE runner took every step while the credential was throttled.
	done := 0
	for _, s := range stepsOf(label) {
		if s.Status == "completed" && s.Result == "SUCCESSFUL" {
			done++
		}
	}
	if done != 3 {
		t.Errorf("%d of 3 steps done by the ONLINE runner during the throttle, want 3: %+v", done, stepsOf(label))
	}
	if n := len(bbRunners(controllers.BitbucketNamePrefix(pool))); n != 1 {
		t.Errorf("%d Bitbucket runners, want the one ONLINE: nothing can be created", n)
	}
	sys.BBSim.Throttle(throttledCredential, false)
	deleteAndWaitGone(t, pool, 5*time.Minute)
}

// throttledClient is a client on the running operator's budget registry for the throttled
// credential: it shares the operator's budget, so its Throttle is the operator's.
func throttledClient(t *testing.T) *bitbucket.Client {
	t.Helper()
	c, err := bitbucket.New(bitbucket.Config{BaseURL: sys.BBSimURL, Credentials: bitbucket.Credentials{AccessToken: throttledToken}, Budgets: sys.Budgets})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
