package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

func TestSecretIndexFindsEverySecretAsIsAndInBase64(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef"
	idx := newSecretIndex(map[string]string{secret: "runner OAuth secret", "short": "too short to search"})
	tests := []struct {
		name      string
		text      string
		want      map[string]int
		wantLines map[string]int
	}{
		{"absent", "nothing to see\nhere", map[string]int{}, map[string]int{}},
		{"in a log line", `{"msg":"x"}` + "\n" + `{"token":"` + secret + `"}`,
			map[string]int{"runner OAuth secret": 1}, map[string]int{"runner OAuth secret": 2}},
		{"twice", secret + " " + secret, map[string]int{"runner OAuth secret": 2}, map[string]int{"runner OAuth secret": 1}},
		{"base64", "data: " + base64.StdEncoding.EncodeToString([]byte(secret)),
			map[string]int{"runner OAuth secret (base64)": 1}, map[string]int{"runner OAuth secret (base64)": 1}},
		{"a prefix is not a hit", secret[:20], map[string]int{}, map[string]int{}},
		{"short values are not searched", "short short", map[string]int{}, map[string]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			counts, lines := idx.find([]byte(tt.text))
			if !equalCounts(counts, tt.want) || !equalCounts(lines, tt.wantLines) {
				t.Errorf("find = %v (lines %v), want %v (lines %v)", counts, lines, tt.want, tt.wantLines)
			}
		})
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestExpectedRunnersOfAnIdlePool(t *testing.T) {
	tests := []struct {
		name string
		spec poolSpec
		want int
	}{
		{"idle buffer of one", poolSpec{policy: v1alpha1.ScalingPolicyIdleBuffer, min: 0, max: 4, idle: 1}, 1},
		{"idle buffer below min", poolSpec{policy: v1alpha1.ScalingPolicyIdleBuffer, min: 5, max: 6, idle: 1}, 5},
		{"queue scales to zero", poolSpec{policy: v1alpha1.ScalingPolicyQueue, min: 0, max: 4, idle: 0}, 0},
		{"percentage idle halves down to one", poolSpec{policy: v1alpha1.ScalingPolicyPercentageIdle, min: 0, max: 5}, 1},
		{"percentage idle keeps min", poolSpec{policy: v1alpha1.ScalingPolicyPercentageIdle, min: 3, max: 5}, 3},
		{"idle buffer capped by max", poolSpec{policy: v1alpha1.ScalingPolicyIdleBuffer, min: 0, max: 2, idle: 4}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &poolInfo{poolSpec: tt.spec}
			if got := p.expected(); got != tt.want {
				t.Errorf("expected() = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestClassifyBlamesTheOperatorOnlyForFailuresTheRunDidNotCause(t *testing.T) {
	now := time.Now()
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	r := &run{attrib: newAttribution()}
	r.attrib.add("{broken}", "pod deleted")
	snap := bbsim.Snapshot{Now: now.Add(time.Minute), Steps: []bbsim.StepView{
		{UUID: "ok", Status: "completed", Result: bbsim.ResultSuccessful, EnqueuedAt: now, StartedAt: at(3 * time.Second), CompletedAt: at(10 * time.Second)},
		{UUID: "injected", Status: "completed", Result: bbsim.ResultError, Runner: "{broken}", Reason: "runner {broken} went offline while running the step: runner pod deleted",
			EnqueuedAt: now, StartedAt: at(time.Second), CompletedAt: at(5 * time.Second)},
		{UUID: "ours", Status: "completed", Result: bbsim.ResultError, Runner: "{other}", Reason: "runner {other} was deleted while running the step",
			EnqueuedAt: now, StartedAt: at(time.Second), CompletedAt: at(5 * time.Second)},
		{UUID: "waiting", Status: "queued", EnqueuedAt: now},
	}}
	got := r.classify(snap, nil)
	if got.total != 4 || got.ok != 1 || got.failedInjected != 1 || got.failedUs != 1 || got.busyKilled != 1 || got.unfinished != 1 {
		t.Errorf("classify = %+v", got)
	}
	if got.maxWait() != time.Minute {
		t.Errorf("max wait = %s, want the queued step's minute", got.maxWait())
	}
	only := r.classify(snap, map[string]bool{"ok": true})
	if only.total != 1 || only.failedUs != 0 {
		t.Errorf("classify of one step = %+v", only)
	}
}

func TestAttributionWindow(t *testing.T) {
	a := newAttribution()
	a.add("{r}", "node removed")
	tests := []struct {
		name     string
		runner   string
		failedAt time.Time
		want     bool
	}{
		{"just after", "{r}", time.Now().Add(time.Second), true},
		{"a moment before (clocks of two goroutines)", "{r}", time.Now().Add(-time.Second), true},
		{"long after", "{r}", time.Now().Add(attributionWindow + time.Minute), false},
		{"another runner", "{s}", time.Now(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, got := a.explain(tt.runner, tt.failedAt); got != tt.want {
				t.Errorf("explain = %t, want %t", got, tt.want)
			}
		})
	}
}

func TestProxyLearnsCredentialsAndStretchesTokens(t *testing.T) {
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/site/oauth2/access_token":
			_, _ = io.WriteString(w, `{"access_token":"access-token-value-0123456789","refresh_token":"refresh-token-value-0123456789","expires_in":20}`)
		case strings.HasSuffix(r.URL.Path, "/pipelines-config/runners"):
			_, _ = io.WriteString(w, `{"uuid":"{x}","oauth_client":{"id":"id","secret":"runner-secret-value-0123456789"}}`)
		case r.URL.Path == "/drop":
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		default:
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	secrets := newSecretSet()
	px := newProxy(backend, secrets)
	srv := httptest.NewServer(px)
	defer srv.Close()
	// Fresh connections only: a transport retries a GET once when a reused connection is
	// closed without an answer, which would count the drop twice.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	post := func(path string) map[string]any {
		t.Helper()
		resp, err := client.Post(srv.URL+path, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		return doc
	}
	if got := post("/site/oauth2/access_token")["expires_in"]; got != float64(20) {
		t.Errorf("expires_in = %v, want bbsim's 20", got)
	}
	px.stretchTokens.Store(true)
	if got := post("/site/oauth2/access_token")["expires_in"]; got != float64(7200) {
		t.Errorf("expires_in while stretching = %v, want 7200", got)
	}
	post("/internal/workspaces/w/pipelines-config/runners")
	if _, err := client.Get(srv.URL + "/drop"); err == nil {
		t.Error("a dropped connection answered")
	}
	resp, err := client.Get(srv.URL + "/2.0/anything")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	known := secrets.snapshot()
	for _, v := range []string{"access-token-value-0123456789", "refresh-token-value-0123456789", "runner-secret-value-0123456789"} {
		if _, ok := known[v]; !ok {
			t.Errorf("the proxy did not learn %q", v)
		}
	}
	c := px.counts()
	if c.Requests != 5 || c.OK != 3 || c.TooMany != 1 || c.Dropped != 1 || c.TokenGrants != 2 {
		t.Errorf("counts = %+v", c)
	}
}

// The tenant phase's hand edit of a budget Lease must cost the credential nothing once a new
// leader clamps it: what it adds is outside the window or the record's length (it may push the
// oldest real minute out of the record, which costs nothing either).
func TestEditedBudgetStateClampsToTheRealCounts(t *testing.T) {
	now := time.Date(2026, 12, 4, 0, 30, 20, 0, time.UTC)
	tests := []struct {
		name  string
		state bitbucket.BudgetState
	}{
		{"a few recent minutes", bitbucket.BudgetState{Start: now.Add(-5 * time.Minute).Truncate(time.Minute), Counts: []int{3, 0, 12, 7, 1}}},
		{"a full hour", bitbucket.BudgetState{Start: now.Add(-58 * time.Minute).Truncate(time.Minute), Counts: slicesRepeat(10, 59)}},
		{"one minute", bitbucket.BudgetState{Start: now.Truncate(time.Minute), Counts: []int{4}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			edited, err := bitbucket.ParseBudgetState(editedBudgetState(tt.state, now))
			if err != nil {
				t.Fatal(err)
			}
			want := tt.state.Clamp(now, 1000)
			got := edited.Clamp(now, 1000)
			if got.Total() > want.Total() || got.Total() < want.Total()-10 || got.BlockedUntil.After(now) {
				t.Errorf("clamped edit holds %d requests (blocked until %s), the real state %d", got.Total(), got.BlockedUntil, want.Total())
			}
		})
	}
}

func slicesRepeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}
