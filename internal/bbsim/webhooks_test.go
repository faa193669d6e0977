package bbsim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type receivedHook struct {
	header http.Header
	body   []byte
}

// hookReceiver records deliveries; failFirst answers 500 to that many requests.
type hookReceiver struct {
	mu        sync.Mutex
	got       []receivedHook
	failFirst int
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failFirst > 0 {
		h.failFirst--
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	h.got = append(h.got, receivedHook{header: r.Header.Clone(), body: body})
}

func (h *hookReceiver) received() []receivedHook {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]receivedHook(nil), h.got...)
}

func TestCommitStatusWebhooksAreSignedAndOrdered(t *testing.T) {
	const secret = "hook-secret"
	receiver := &hookReceiver{}
	target := httptest.NewServer(receiver)
	t.Cleanup(target.Close)

	e := newEnv(t, Options{Webhooks: []WebhookTarget{{URL: target.URL, Secret: secret}}})
	r := e.createRunner(wsRunnersPath(DefaultWorkspaceUUID), "r")
	e.connect(r.UUID)
	e.enqueue(EnqueueRequest{Count: 1, Duration: time.Second})
	e.advance(time.Second)

	eventually(t, "three deliveries", func() bool { return len(receiver.received()) == 3 })
	wantEvents := []struct{ key, state string }{
		{eventStatusCreated, "INPROGRESS"},
		{eventStatusUpdated, "INPROGRESS"},
		{eventStatusUpdated, "SUCCESSFUL"},
	}
	for i, got := range receiver.received() {
		if key := got.header.Get("X-Event-Key"); key != wantEvents[i].key {
			t.Errorf("delivery %d: X-Event-Key %q, want %q", i, key, wantEvents[i].key)
		}
		for _, h := range []string{"X-Hook-UUID", "X-Request-UUID"} {
			if got.header.Get(h) == "" {
				t.Errorf("delivery %d: missing %s", i, h)
			}
		}
		if got.header.Get("X-Attempt-Number") != "1" {
			t.Errorf("delivery %d: X-Attempt-Number %q", i, got.header.Get("X-Attempt-Number"))
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(got.body)
		if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); got.header.Get("X-Hub-Signature") != want {
			t.Errorf("delivery %d: signature %q, want %q", i, got.header.Get("X-Hub-Signature"), want)
		}
		var payload commitStatusEvent
		if err := json.Unmarshal(got.body, &payload); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
		cs := payload.CommitStatus
		if cs.State != wantEvents[i].state || cs.Type != "build" || cs.Key == "" || cs.Commit.Hash == "" || cs.Links["commit"].Href == "" {
			t.Errorf("delivery %d: commit_status %+v", i, cs)
		}
		if payload.Repository.UUID != DefaultRepositoryUUID || payload.Repository.Type != "repository" || payload.Repository.FullName != "demo/app" {
			t.Errorf("delivery %d: repository %+v", i, payload.Repository)
		}
	}
}

func TestWebhookRetriesAndUnsignedDelivery(t *testing.T) {
	receiver := &hookReceiver{failFirst: 2}
	target := httptest.NewServer(receiver)
	t.Cleanup(target.Close)
	e := newEnv(t, Options{})
	e.sim.AddWebhook(WebhookTarget{URL: target.URL})
	e.enqueue(EnqueueRequest{Count: 1})

	eventually(t, "the third attempt", func() bool { return len(receiver.received()) == 1 })
	got := receiver.received()[0]
	if got.header.Get("X-Attempt-Number") != "3" || got.header.Get("X-Hub-Signature") != "" {
		t.Fatalf("headers %v", got.header)
	}
	eventually(t, "delivery accounted", func() bool {
		views := e.sim.State().Webhooks
		return len(views) == 1 && views[0].Deliveries == 1 && views[0].Failures == 0
	})
}

func TestWebhookTargetsMustBeLoopback(t *testing.T) {
	cases := map[string]bool{
		"http://127.0.0.1:9000/hook":   true,
		"http://localhost:9000/hook":   true,
		"https://[::1]:9000/hook":      true,
		"http://example.com/hook":      false,
		"http://10.0.0.1/hook":         false,
		"ftp://127.0.0.1/hook":         false,
		"http://127.0.0.1.nip.io/hook": false,
	}
	for url, ok := range cases {
		if err := validateWebhookURL(url); (err == nil) != ok {
			t.Errorf("validateWebhookURL(%q) = %v, want ok=%v", url, err, ok)
		}
	}
	e := newEnv(t, Options{})
	e.sim.AddWebhook(WebhookTarget{URL: "http://example.com/hook"})
	state := e.sim.State()
	if len(state.Webhooks) != 0 || len(state.RejectedWebhooks) != 1 || !strings.Contains(state.RejectedWebhooks[0], "example.com") {
		t.Fatalf("non-loopback target accepted: %+v %+v", state.Webhooks, state.RejectedWebhooks)
	}
}
