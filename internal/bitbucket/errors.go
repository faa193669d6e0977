package bitbucket

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// Sentinel errors. Every error returned for an HTTP failure is an *APIError that
// matches the sentinel for its class with errors.Is, so callers can branch on
// the class without knowing status codes.
var (
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrUnauthorized = errors.New("unauthorized")
	ErrForbidden    = errors.New("forbidden")
	ErrRateLimited  = errors.New("rate limited")
	// ErrLimitReached is the 100-runners-per-workspace-or-repository cap
	// (README "Limitation" of the Atlassian autoscaler; MAX_RUNNERS_COUNT=100).
	ErrLimitReached = errors.New("runner limit reached")
	// ErrBudgetExhausted is returned without sending anything when the shared
	// hourly request budget of the credential has no slot for the request.
	ErrBudgetExhausted = errors.New("bitbucket request budget exhausted")
	// ErrNoRunnerSecret means Bitbucket created a runner but its response had no
	// OAuth client secret, so no agent can ever connect as that runner.
	ErrNoRunnerSecret = errors.New("create response carries no runner OAuth secret")
)

// maxErrorMessageLen bounds what we copy from an error body: the message is for
// humans and logs, and an unexpected HTML page must not flood either.
const maxErrorMessageLen = 300

// APIError is a non-2xx answer from Bitbucket (or from the OAuth token endpoint).
// It holds only what is safe to log: the method, the endpoint template (never a
// raw URL), the status and Bitbucket's own message.
type APIError struct {
	StatusCode int
	Message    string
	Detail     string
	// Endpoint is a route template such as "runners.create", not a path.
	Endpoint string
	Method   string
	// RetryAfter is the server's Retry-After (429 and 503), zero when absent.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bitbucket %s %s: %d %s", e.Method, e.Endpoint, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Detail != "" && e.Detail != e.Message {
		b.WriteString(" (")
		b.WriteString(e.Detail)
		b.WriteString(")")
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; retry after %s", e.RetryAfter)
	}
	return b.String()
}

// Is maps the status code onto the sentinel errors.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrRateLimited:
		return e.StatusCode == http.StatusTooManyRequests
	case ErrConflict:
		return e.StatusCode == http.StatusConflict || e.limitReached()
	case ErrLimitReached:
		return e.limitReached()
	}
	return false
}

// limitWording matches how a runner cap is likely to be phrased. The exact
// message of the /internal runner API is not documented, so the match is loose:
// "limit", "maximum number", "max runners", "too many runners".
var limitWording = regexp.MustCompile(`(?i)(limit|maximum|max(imum)?\s+(number\s+of\s+)?runners|too many runners)`)

func (e *APIError) limitReached() bool {
	// Only runner endpoints have a cap; a 400 elsewhere that happens to say
	// "limit" (a pagelen limit, say) is an ordinary bad request.
	if !strings.HasPrefix(e.Endpoint, "runners.") {
		return false
	}
	if e.StatusCode != http.StatusBadRequest && e.StatusCode != http.StatusConflict {
		return false
	}
	return limitWording.MatchString(e.Message) || limitWording.MatchString(e.Detail)
}

// BudgetExhaustedError is returned instead of sending a request that the
// credential's hourly budget cannot afford. RetryAfter is when a slot frees for
// a request of the same priority.
type BudgetExhaustedError struct {
	Method     string
	Endpoint   string
	Priority   Priority
	RetryAfter time.Duration
}

func (e *BudgetExhaustedError) Error() string {
	return fmt.Sprintf("bitbucket %s %s: %s priority request refused: hourly request budget exhausted; next slot in %s",
		e.Method, e.Endpoint, e.Priority, e.RetryAfter.Round(time.Second))
}

func (e *BudgetExhaustedError) Is(target error) bool { return target == ErrBudgetExhausted }

// IsNotFound reports a 404.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsConflict reports a 409 or a runner-limit refusal.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsUnauthorized reports a 401 (after the one token refresh for OAuth) or a
// refused OAuth token grant.
func IsUnauthorized(err error) bool { return errors.Is(err, ErrUnauthorized) }

// IsForbidden reports a 403, typically a missing scope such as runner:write.
func IsForbidden(err error) bool { return errors.Is(err, ErrForbidden) }

// IsRateLimited reports a 429 that outlasted the retries.
func IsRateLimited(err error) bool { return errors.Is(err, ErrRateLimited) }

// IsLimitReached reports that the workspace or repository already has the
// maximum number of runners.
func IsLimitReached(err error) bool { return errors.Is(err, ErrLimitReached) }

// IsBudgetExhausted reports a request refused locally by the hourly budget.
func IsBudgetExhausted(err error) bool { return errors.Is(err, ErrBudgetExhausted) }

// RetryAfter extracts how long to wait before trying again from a rate-limit
// or budget error. Callers use it to requeue instead of polling blindly.
func RetryAfter(err error) (time.Duration, bool) {
	var budgetErr *BudgetExhaustedError
	if errors.As(err, &budgetErr) {
		return budgetErr.RetryAfter, true
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
		return apiErr.RetryAfter, true
	}
	return 0, false
}

// decodeAPIError builds an *APIError from a non-2xx response. It understands
// Bitbucket's envelope {"type":"error","error":{"message","detail"}} and the
// OAuth token endpoint's {"error":"...","error_description":"..."}; anything
// else becomes a short plain-text message, or none at all for markup.
func decodeAPIError(method, endpoint string, status int, header http.Header, body []byte, now time.Time) *APIError {
	apiErr := &APIError{StatusCode: status, Endpoint: endpoint, Method: method}
	if header != nil {
		if d, ok := parseRetryAfter(header.Get("Retry-After"), now); ok {
			apiErr.RetryAfter = d
		}
	}
	apiErr.Message, apiErr.Detail = errorText(body)
	return apiErr
}

func errorText(body []byte) (message, detail string) {
	var envelope struct {
		Error            json.RawMessage `json:"error"`
		ErrorDescription string          `json:"error_description"`
		Message          string          `json:"message"`
	}
	if err := json.Unmarshal(body, &envelope); err == nil {
		var nested struct {
			Message string          `json:"message"`
			Detail  json.RawMessage `json:"detail"`
		}
		var code string
		switch {
		case len(envelope.Error) > 0 && json.Unmarshal(envelope.Error, &nested) == nil && (nested.Message != "" || len(nested.Detail) > 0):
			return clip(nested.Message), clip(rawText(nested.Detail))
		case len(envelope.Error) > 0 && json.Unmarshal(envelope.Error, &code) == nil && code != "":
			// OAuth 2 error response (RFC 6749 section 5.2).
			return clip(code), clip(envelope.ErrorDescription)
		case envelope.Message != "":
			return clip(envelope.Message), ""
		}
		return "", ""
	}
	text := strings.TrimSpace(string(body))
	if text == "" || strings.HasPrefix(text, "<") {
		return "", ""
	}
	if i := strings.IndexAny(text, "\r\n"); i >= 0 {
		text = text[:i]
	}
	return clip(text), ""
}

// rawText renders a detail that is usually a string but may be any JSON value.
func rawText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

func clip(s string) string {
	s = strings.ToValidUTF8(strings.TrimSpace(s), "?")
	if len(s) <= maxErrorMessageLen {
		return s
	}
	cut := maxErrorMessageLen
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
