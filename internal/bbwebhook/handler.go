package bbwebhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/go-logr/logr"
)

// DefaultMaxBody bounds a delivery body. Commit status and push payloads are
// a few KiB; a push of many branches stays well under this.
const DefaultMaxBody int64 = 256 << 10

// DefaultMaxInFlight bounds the deliveries read at once. With DefaultMaxBody
// that bounds the memory bodies take (8 MiB) whatever a flood sends; Bitbucket
// sends a few deliveries per pipeline, one at a time per hook.
const DefaultMaxInFlight = 32

// Headers Bitbucket sets on every delivery (event-payloads doc).
const (
	EventKeyHeader    = "X-Event-Key"
	RequestUUIDHeader = "X-Request-UUID"
	HookUUIDHeader    = "X-Hook-UUID"
	AttemptHeader     = "X-Attempt-Number"
)

// Handler serves Bitbucket webhook deliveries (POST only).
//
// Answers: 405 for other methods, 503 when MaxInFlight deliveries are being
// read already, 413 for a body over MaxBody, 401 for a bad
// or missing signature when Secret is set, 202 for events it does not act on,
// 400 for a body it cannot decode, and 202 after OnEvent for the rest.
// Bitbucket retries a delivery that fails (up to two more times), so anything
// the sender cannot fix by retrying is answered once and plainly.
type Handler struct {
	// Secret is the webhook's secret. When set, every delivery must carry a
	// valid X-Hub-Signature; when empty, deliveries are not authenticated and
	// should only ever be treated as a hint to poll.
	Secret []byte
	// OnEvent is called for each accepted event before the answer is sent, so
	// it must return quickly and never wait on Bitbucket or a reconcile: a
	// slow answer makes Bitbucket time out and retry. Hand the event on (a
	// non-blocking channel send, a rate-limited queue add) and return. ctx is
	// the request's context and ends when ServeHTTP returns. May be nil.
	OnEvent func(context.Context, Event)
	// Metrics counts deliveries; nil records nothing.
	Metrics *Metrics
	// Logger receives one line per delivery that is refused; accepted ones
	// log at V(1). The secret and the signature header are never logged.
	Logger logr.Logger
	// MaxBody is the largest body accepted, in bytes; 0 means DefaultMaxBody.
	MaxBody int64
	// MaxInFlight bounds the deliveries being read and checked at once; more
	// are answered 503 at once (Bitbucket retries them). 0 means
	// DefaultMaxInFlight.
	MaxInFlight int

	slotsOnce sync.Once
	slots     chan struct{}
}

var errBodyTooLarge = errors.New("webhook body exceeds the size limit")

// ServeHTTP answers one delivery; see Handler for the status codes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get(EventKeyHeader)
	log := h.Logger.WithValues("event", eventLabel(key), "requestUUID", clip(r.Header.Get(RequestUUIDHeader)))

	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}

	if !h.acquire() {
		h.Metrics.delivery(key, OutcomeBusy)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many deliveries at once", http.StatusServiceUnavailable)
		return
	}
	defer h.release()

	body, err := h.readBody(r)
	if errors.Is(err, errBodyTooLarge) {
		h.Metrics.delivery(key, OutcomeTooLarge)
		log.Info("webhook delivery refused", "reason", "body too large", "limit", h.maxBody())
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if err != nil {
		h.Metrics.delivery(key, OutcomeMalformed)
		log.Info("webhook delivery refused", "reason", "unreadable body", "error", err.Error())
		http.Error(w, "unreadable body", http.StatusBadRequest)
		return
	}

	// Verify before looking at the event at all, so an unsigned caller learns
	// nothing about which events are acted on.
	if len(h.Secret) > 0 {
		if err := VerifySignature(h.Secret, body, r.Header.Get(SignatureHeader)); err != nil {
			h.Metrics.delivery(key, OutcomeBadSignature)
			log.Info("webhook delivery refused", "reason", err.Error(), "remoteAddr", r.RemoteAddr)
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
	}

	if !Handled(key) {
		h.Metrics.delivery(key, OutcomeIgnored)
		log.V(1).Info("webhook event ignored")
		w.WriteHeader(http.StatusAccepted)
		return
	}

	ev, err := ParseEvent(key, body)
	if err != nil {
		h.Metrics.delivery(key, OutcomeMalformed)
		log.Info("webhook delivery refused", "reason", "malformed payload", "error", err.Error())
		http.Error(w, "malformed payload", http.StatusBadRequest)
		return
	}
	ev.RequestUUID = r.Header.Get(RequestUUIDHeader)

	h.Metrics.delivery(key, OutcomeAccepted)
	log.V(1).Info("webhook event accepted", "repository", ev.RepositoryUUID, "repositoryFullName", ev.RepositoryFullName,
		"state", ev.CommitStatusState, "attempt", clip(r.Header.Get(AttemptHeader)))
	if h.OnEvent != nil {
		h.OnEvent(r.Context(), ev)
	}
	w.WriteHeader(http.StatusAccepted)
}

// acquire takes a delivery slot without waiting; false when all are taken.
func (h *Handler) acquire() bool {
	h.slotsOnce.Do(func() {
		n := h.MaxInFlight
		if n <= 0 {
			n = DefaultMaxInFlight
		}
		h.slots = make(chan struct{}, n)
	})
	select {
	case h.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (h *Handler) release() { <-h.slots }

func (h *Handler) maxBody() int64 {
	if h.MaxBody > 0 {
		return h.MaxBody
	}
	return DefaultMaxBody
}

// readBody reads at most one byte past the limit, so an oversized body is
// detected without buffering it whole.
func (h *Handler) readBody(r *http.Request) ([]byte, error) {
	limit := h.maxBody()
	if r.ContentLength > limit {
		return nil, errBodyTooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read webhook body: %w", err)
	}
	if int64(len(body)) > limit {
		return nil, errBodyTooLarge
	}
	return body, nil
}

// clip bounds a header value before it is logged: until the signature is
// checked, headers are whatever the caller chose to send.
func clip(s string) string {
	const maxLogged = 64
	if len(s) > maxLogged {
		return s[:maxLogged] + "..."
	}
	return s
}
