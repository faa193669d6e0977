package bbsim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Webhook event keys Bitbucket sends for build statuses (the closest thing it
// has to a pipeline event).
const (
	eventStatusCreated = "repo:commit_status_created"
	eventStatusUpdated = "repo:commit_status_updated"
)

const (
	// Bitbucket retries a failed delivery up to two more times.
	webhookAttempts = 3
	webhookTimeout  = 5 * time.Second
	webhookBackoff  = 100 * time.Millisecond
)

// WebhookView reports deliveries to one target; the secret is never shown.
type WebhookView struct {
	URL        string `json:"url"`
	UUID       string `json:"uuid"`
	Signed     bool   `json:"signed"`
	Deliveries int    `json:"deliveries"`
	Failures   int    `json:"failures"`
	LastError  string `json:"last_error,omitempty"`
}

type hookTarget struct {
	WebhookTarget
	view WebhookView
}

type hookDelivery struct {
	target *hookTarget
	event  string
	body   []byte
}

// webhookSender delivers events in order, one at a time, so a receiver sees
// created before updated for the same pipeline.
type webhookSender struct {
	log    logr.Logger
	client *http.Client
	ctx    context.Context
	cancel context.CancelFunc
	signal chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	targets []*hookTarget
	pending []hookDelivery
}

func newWebhookSender(log logr.Logger) *webhookSender {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// Targets are loopback only; never route them through an environment proxy.
	transport.Proxy = nil
	ctx, cancel := context.WithCancel(context.Background())
	h := &webhookSender{
		log:    log,
		client: &http.Client{Transport: transport, Timeout: webhookTimeout},
		ctx:    ctx, cancel: cancel,
		signal: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	go h.run()
	return h
}

func (h *webhookSender) close() {
	h.cancel()
	<-h.done
}

// validateWebhookURL accepts only http(s) URLs on a loopback host: the
// simulator must never send traffic anywhere else.
func validateWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("parse webhook url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("webhook url %q: scheme must be http or https", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("webhook url %q: host must be loopback (localhost, 127.0.0.1, ::1)", raw)
}

func (h *webhookSender) add(t WebhookTarget) error {
	if err := validateWebhookURL(t.URL); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.targets = append(h.targets, &hookTarget{
		WebhookTarget: t,
		view:          WebhookView{URL: t.URL, UUID: newUUID(), Signed: t.Secret != ""},
	})
	return nil
}

func (h *webhookSender) clearTargets() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.targets = nil
	h.pending = nil
}

func (h *webhookSender) views() []WebhookView {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]WebhookView, 0, len(h.targets))
	for _, t := range h.targets {
		out = append(out, t.view)
	}
	return out
}

func (h *webhookSender) send(event string, body []byte) {
	h.mu.Lock()
	for _, t := range h.targets {
		h.pending = append(h.pending, hookDelivery{target: t, event: event, body: body})
	}
	h.mu.Unlock()
	select {
	case h.signal <- struct{}{}:
	default:
	}
}

func (h *webhookSender) run() {
	defer close(h.done)
	for {
		h.mu.Lock()
		var next *hookDelivery
		if len(h.pending) > 0 {
			d := h.pending[0]
			h.pending = h.pending[1:]
			next = &d
		}
		h.mu.Unlock()
		if next != nil {
			h.deliver(*next)
			continue
		}
		select {
		case <-h.ctx.Done():
			return
		case <-h.signal:
		}
	}
}

func (h *webhookSender) deliver(d hookDelivery) {
	requestUUID := newUUID()
	var lastErr error
	for attempt := 1; attempt <= webhookAttempts; attempt++ {
		if lastErr = h.post(d, requestUUID, attempt); lastErr == nil {
			break
		}
		select {
		case <-h.ctx.Done():
			return
		case <-time.After(webhookBackoff * time.Duration(attempt)):
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	d.target.view.Deliveries++
	if lastErr != nil {
		d.target.view.Failures++
		d.target.view.LastError = lastErr.Error()
		h.log.Info("webhook delivery failed", "url", d.target.URL, "event", d.event, "error", lastErr.Error())
	}
}

func (h *webhookSender) post(d hookDelivery, requestUUID string, attempt int) error {
	req, err := http.NewRequestWithContext(h.ctx, http.MethodPost, d.target.URL, bytes.NewReader(d.body))
	if err != nil {
		return fmt.Errorf("build webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Bitbucket-Webhooks/2.0")
	req.Header.Set("X-Event-Key", d.event)
	req.Header.Set("X-Hook-UUID", strings.Trim(d.target.view.UUID, "{}"))
	req.Header.Set("X-Request-UUID", strings.Trim(requestUUID, "{}"))
	req.Header.Set("X-Attempt-Number", strconv.Itoa(attempt))
	if d.target.Secret != "" {
		req.Header.Set("X-Hub-Signature", "sha256="+signBody(d.target.Secret, d.body))
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("post webhook %s: %w", d.event, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("post webhook %s: status %d", d.event, resp.StatusCode)
	}
	return nil
}

// signBody is Bitbucket's webhook signature: hex HMAC-SHA256 of the raw body.
func signBody(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// Webhook payload (event-payloads doc: actor, repository, commit_status).
type commitStatusEvent struct {
	Actor        actorJSON        `json:"actor"`
	Repository   repositoryJSON   `json:"repository"`
	CommitStatus commitStatusJSON `json:"commit_status"`
}

type commitStatusJSON struct {
	Type        string              `json:"type"`
	Key         string              `json:"key"`
	Name        string              `json:"name"`
	Description string              `json:"description"`
	State       string              `json:"state"`
	URL         string              `json:"url"`
	Refname     string              `json:"refname"`
	Commit      commitJSON          `json:"commit"`
	CreatedOn   string              `json:"created_on"`
	UpdatedOn   string              `json:"updated_on"`
	Links       map[string]linkJSON `json:"links"`
}

// emitCommitStatusLocked queues a commit-status event for the pipeline's
// current state: INPROGRESS until it completes, then SUCCESSFUL or FAILED
// (commit statuses have no ERROR state).
func (s *Server) emitCommitStatusLocked(p *pipeline, event string) {
	state := "INPROGRESS"
	if p.completed() {
		state = "FAILED"
		if p.result() == ResultSuccessful {
			state = "SUCCESSFUL"
		}
	}
	repoPath := p.repo.fullName()
	payload := commitStatusEvent{
		Actor:      pipelinesActor,
		Repository: repositoryToJSON(p.repo),
		CommitStatus: commitStatusJSON{
			Type:        "build",
			Key:         p.uuid,
			Name:        fmt.Sprintf("Pipeline #%d for %s", p.buildNumber, p.refName),
			Description: strings.ToLower(state),
			State:       state,
			URL:         fmt.Sprintf("https://bitbucket.org/%s/addon/pipelines/home#!/results/%d", repoPath, p.buildNumber),
			Refname:     p.refName,
			Commit:      commitJSON{Type: "commit", Hash: p.commit},
			CreatedOn:   bitbucketTime(p.createdOn),
			UpdatedOn:   bitbucketTime(s.now()),
			Links: map[string]linkJSON{
				"commit": {Href: fmt.Sprintf("https://api.bitbucket.org/2.0/repositories/%s/commit/%s", repoPath, p.commit)},
				"self":   {Href: fmt.Sprintf("https://api.bitbucket.org/2.0/repositories/%s/commit/%s/statuses/build/%s", repoPath, p.commit, url.PathEscape(p.uuid))},
			},
		},
	}
	body, err := json.Marshal(payload)
	if err != nil {
		s.log.Error(err, "encode webhook payload", "pipeline", p.uuid)
		return
	}
	s.hooks.send(event, body)
}

// AddWebhook registers a delivery target. Only loopback URLs are accepted;
// others are refused, logged, and listed in State().RejectedWebhooks.
func (s *Server) AddWebhook(t WebhookTarget) {
	if err := s.hooks.add(t); err != nil {
		s.log.Error(err, "webhook target refused")
		s.mu.Lock()
		s.rejectedHooks = append(s.rejectedHooks, t.URL)
		s.mu.Unlock()
	}
}
