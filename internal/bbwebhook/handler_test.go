package bbwebhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// recorder collects OnEvent calls and everything logged.
type recorder struct {
	mu     sync.Mutex
	events []Event
	logs   strings.Builder
}

func (r *recorder) onEvent(_ context.Context, ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) got() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *recorder) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.logs.WriteString(prefix + " " + args + "\n")
	}, funcr.Options{Verbosity: 10})
}

func (r *recorder) logText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.String()
}

func newTestHandler(t *testing.T, secret string, maxBody int64) (*Handler, *recorder, *prometheus.Registry) {
	t.Helper()
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	m := NewMetrics()
	if err := m.Register(reg); err != nil {
		t.Fatalf("register metrics: %v", err)
	}
	h := &Handler{OnEvent: rec.onEvent, Metrics: m, Logger: rec.logger(), MaxBody: maxBody}
	if secret != "" {
		h.Secret = []byte(secret)
	}
	return h, rec, reg
}

func deliveries(t *testing.T, reg *prometheus.Registry, event, outcome string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range families {
		if mf.GetName() != "runnerpool_webhook_deliveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, map[string]string{"event": event, "outcome": outcome}) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
			return false
		}
	}
	return true
}

const testSecret = "hook-secret"

func TestHandler(t *testing.T) {
	body := commitStatusPayload
	goodSig := Sign([]byte(testSecret), []byte(body))
	tests := []struct {
		name        string
		secret      string
		maxBody     int64
		method      string
		key         string
		body        string
		signature   string // X-Hub-Signature value; empty: header absent
		wantStatus  int
		wantEvent   bool
		wantOutcome string // "" when the delivery is not counted
	}{
		{name: "good signature", secret: testSecret, key: EventCommitStatusCreated, body: body, signature: goodSig,
			wantStatus: http.StatusAccepted, wantEvent: true, wantOutcome: OutcomeAccepted},
		{name: "bad signature", secret: testSecret, key: EventCommitStatusCreated, body: body, signature: Sign([]byte("wrong"), []byte(body)),
			wantStatus: http.StatusUnauthorized, wantOutcome: OutcomeBadSignature},
		{name: "wrong algorithm prefix", secret: testSecret, key: EventCommitStatusCreated, body: body, signature: "sha1=" + strings.TrimPrefix(goodSig, "sha256=")[:40],
			wantStatus: http.StatusUnauthorized, wantOutcome: OutcomeBadSignature},
		{name: "missing signature with a secret set", secret: testSecret, key: EventCommitStatusCreated, body: body,
			wantStatus: http.StatusUnauthorized, wantOutcome: OutcomeBadSignature},
		{name: "bad signature on an ignored event is still refused", secret: testSecret, key: "repo:fork", body: body, signature: "sha256=deadbeefcafe",
			wantStatus: http.StatusUnauthorized, wantOutcome: OutcomeBadSignature},
		{name: "no secret configured accepts unsigned", key: EventCommitStatusUpdated, body: body,
			wantStatus: http.StatusAccepted, wantEvent: true, wantOutcome: OutcomeAccepted},
		{name: "push accepted", key: EventPush, body: pushPayload,
			wantStatus: http.StatusAccepted, wantEvent: true, wantOutcome: OutcomeAccepted},
		{name: "oversized body", secret: testSecret, maxBody: 64, key: EventCommitStatusCreated, body: body, signature: goodSig,
			wantStatus: http.StatusRequestEntityTooLarge, wantOutcome: OutcomeTooLarge},
		{name: "body exactly at the limit", maxBody: int64(len(body)), key: EventCommitStatusCreated, body: body,
			wantStatus: http.StatusAccepted, wantEvent: true, wantOutcome: OutcomeAccepted},
		{name: "wrong method", method: http.MethodGet, key: EventCommitStatusCreated,
			wantStatus: http.StatusMethodNotAllowed},
		{name: "unknown event ignored", key: "pullrequest:created", body: body,
			wantStatus: http.StatusAccepted, wantOutcome: OutcomeIgnored},
		{name: "missing event key ignored", body: body,
			wantStatus: http.StatusAccepted, wantOutcome: OutcomeIgnored},
		{name: "malformed JSON", key: EventCommitStatusCreated, body: `{"repository":`,
			wantStatus: http.StatusBadRequest, wantOutcome: OutcomeMalformed},
		{name: "signed but no repository", secret: testSecret, key: EventPush, body: `{"push":{}}`, signature: Sign([]byte(testSecret), []byte(`{"push":{}}`)),
			wantStatus: http.StatusBadRequest, wantOutcome: OutcomeMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, rec, reg := newTestHandler(t, tt.secret, tt.maxBody)
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, "/webhooks/bitbucket", strings.NewReader(tt.body))
			if tt.key != "" {
				req.Header.Set(EventKeyHeader, tt.key)
			}
			req.Header.Set(RequestUUIDHeader, "4d5e6f70-0000-4000-8000-000000000001")
			if tt.signature != "" {
				req.Header.Set(SignatureHeader, tt.signature)
			}
			resp := httptest.NewRecorder()
			h.ServeHTTP(resp, req)

			if resp.Code != tt.wantStatus {
				t.Errorf("status %d, want %d (body %q)", resp.Code, tt.wantStatus, resp.Body.String())
			}
			if tt.wantStatus == http.StatusMethodNotAllowed && resp.Header().Get("Allow") != http.MethodPost {
				t.Errorf("Allow %q, want POST", resp.Header().Get("Allow"))
			}
			events := rec.got()
			if tt.wantEvent {
				if len(events) != 1 {
					t.Fatalf("OnEvent called %d times, want 1", len(events))
				}
				ev := events[0]
				if ev.Key != tt.key || ev.RepositoryUUID != acmeRepoUUID || ev.RequestUUID != "4d5e6f70-0000-4000-8000-000000000001" {
					t.Errorf("event %+v: wrong key, repository or request uuid", ev)
				}
			} else if len(events) != 0 {
				t.Errorf("OnEvent called with %+v, want no call", events)
			}
			if tt.wantOutcome != "" {
				if n := deliveries(t, reg, eventLabel(tt.key), tt.wantOutcome); n != 1 {
					t.Errorf("deliveries{event=%q,outcome=%q} = %v, want 1", eventLabel(tt.key), tt.wantOutcome, n)
				}
			}
			logs := rec.logText()
			if strings.Contains(logs, testSecret) {
				t.Errorf("logs contain the secret:\n%s", logs)
			}
			if tt.signature != "" && strings.Contains(logs, strings.TrimPrefix(tt.signature, "sha256=")) {
				t.Errorf("logs contain the signature:\n%s", logs)
			}
		})
	}
}

func TestReplayedBadSignatureIsRefusedEveryTime(t *testing.T) {
	h, rec, reg := newTestHandler(t, testSecret, 0)
	forged := Sign([]byte("guess"), []byte(commitStatusPayload))
	for i := range 3 {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(commitStatusPayload))
		req.Header.Set(EventKeyHeader, EventCommitStatusCreated)
		req.Header.Set(SignatureHeader, forged)
		resp := httptest.NewRecorder()
		h.ServeHTTP(resp, req)
		if resp.Code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: status %d, want 401", i+1, resp.Code)
		}
	}
	if events := rec.got(); len(events) != 0 {
		t.Fatalf("OnEvent called %d times for a forged delivery", len(events))
	}
	if n := deliveries(t, reg, EventCommitStatusCreated, OutcomeBadSignature); n != 3 {
		t.Fatalf("bad_signature count %v, want 3", n)
	}
}

func TestUnknownEventKeysShareOneSeries(t *testing.T) {
	h, _, reg := newTestHandler(t, "", 0)
	for _, key := range []string{"repo:fork", "issue:created", strings.Repeat("x", 300)} {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{}`))
		req.Header.Set(EventKeyHeader, key)
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	if n := deliveries(t, reg, eventOther, OutcomeIgnored); n != 3 {
		t.Fatalf("ignored{event=other} = %v, want 3", n)
	}
}

func TestMetricsRegisterTwiceSharesSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	first, second := NewMetrics(), NewMetrics()
	for _, m := range []*Metrics{first, second} {
		if err := m.Register(reg); err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	first.delivery(EventPush, OutcomeAccepted)
	second.delivery(EventPush, OutcomeAccepted)
	if n := deliveries(t, reg, EventPush, OutcomeAccepted); n != 2 {
		t.Fatalf("accepted = %v, want 2 (both Metrics in one series)", n)
	}
}

func TestNilMetricsAndCallbackAreSafe(t *testing.T) {
	h := &Handler{}
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(pushPayload))
	req.Header.Set(EventKeyHeader, EventPush)
	resp := httptest.NewRecorder()
	h.ServeHTTP(resp, req)
	if resp.Code != http.StatusAccepted {
		t.Fatalf("status %d, want 202", resp.Code)
	}
}

func TestDeliveriesBeyondTheInFlightLimitAreTurnedAway(t *testing.T) {
	h, rec, reg := newTestHandler(t, testSecret, 0)
	h.MaxInFlight = 2
	post := func() int {
		req := httptest.NewRequest(http.MethodPost, "/webhooks/bitbucket", strings.NewReader(commitStatusPayload))
		req.Header.Set(EventKeyHeader, EventCommitStatusCreated)
		req.Header.Set(SignatureHeader, Sign([]byte(testSecret), []byte(commitStatusPayload)))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	// Two deliveries being read (slow senders) hold every slot.
	for range 2 {
		if !h.acquire() {
			t.Fatal("no slot free")
		}
	}
	if code := post(); code != http.StatusServiceUnavailable {
		t.Errorf("a third delivery got %d, want 503", code)
	}
	if n := deliveries(t, reg, EventCommitStatusCreated, OutcomeBusy); n != 1 {
		t.Errorf("busy deliveries = %v, want 1", n)
	}
	h.release()
	if code := post(); code != http.StatusAccepted {
		t.Errorf("a delivery once a slot is free got %d, want 202", code)
	}
	if n := len(rec.got()); n != 1 {
		t.Errorf("%d events handed on, want 1", n)
	}
}
