package bitbucket

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestDecodeAPIError(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name        string
		endpoint    string
		status      int
		header      http.Header
		body        string
		wantMessage string
		wantDetail  string
		wantRetry   time.Duration
		is          []error
		isNot       []error
	}{
		{
			name: "bitbucket envelope with detail", endpoint: "runners.get", status: 404,
			body:        `{"type":"error","error":{"message":"Runner not found","detail":"No runner with uuid {x}"}}`,
			wantMessage: "Runner not found", wantDetail: "No runner with uuid {x}",
			is: []error{ErrNotFound}, isNot: []error{ErrConflict, ErrUnauthorized},
		},
		{
			name: "expired token", endpoint: "runners.list", status: 401,
			body:        `{"type":"error","error":{"message":"Access token expired."}}`,
			wantMessage: "Access token expired.", is: []error{ErrUnauthorized},
		},
		{
			name: "forbidden", endpoint: "runners.create", status: 403,
			body:        `{"type":"error","error":{"message":"Your credentials lack one or more required privilege scopes.","detail":{"required":["runner:write"]}}}`,
			wantMessage: "Your credentials lack one or more required privilege scopes.", wantDetail: `{"required":["runner:write"]}`,
			is: []error{ErrForbidden},
		},
		{
			name: "runner limit as 400", endpoint: "runners.create", status: 400,
			body:        `{"type":"error","error":{"message":"Runner limit reached","detail":"A workspace can have at most 100 runners."}}`,
			wantMessage: "Runner limit reached", wantDetail: "A workspace can have at most 100 runners.",
			is: []error{ErrLimitReached, ErrConflict},
		},
		{
			name: "runner limit as 409", endpoint: "runners.create", status: 409,
			body:        `{"type":"error","error":{"message":"Maximum number of runners exceeded"}}`,
			wantMessage: "Maximum number of runners exceeded", is: []error{ErrLimitReached, ErrConflict},
		},
		{
			name: "plain conflict", endpoint: "runners.create", status: 409,
			body:        `{"type":"error","error":{"message":"Name already in use"}}`,
			wantMessage: "Name already in use", is: []error{ErrConflict}, isNot: []error{ErrLimitReached},
		},
		{
			name: "bad request mentioning a limit outside the runner API", endpoint: "pipelines.list", status: 400,
			body:        `{"type":"error","error":{"message":"pagelen over limit"}}`,
			wantMessage: "pagelen over limit", isNot: []error{ErrLimitReached, ErrConflict},
		},
		{
			name: "rate limited with seconds", endpoint: "runners.list", status: 429,
			header:      http.Header{"Retry-After": {"7"}},
			body:        `{"type":"error","error":{"message":"Rate limit for this resource has been exceeded."}}`,
			wantMessage: "Rate limit for this resource has been exceeded.", wantRetry: 7 * time.Second,
			is: []error{ErrRateLimited},
		},
		{
			name: "rate limited with http date", endpoint: "runners.list", status: 429,
			header:    http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}},
			body:      `Rate limit for this resource has been exceeded.`,
			wantRetry: 90 * time.Second, wantMessage: "Rate limit for this resource has been exceeded.",
			is: []error{ErrRateLimited},
		},
		{
			name: "oauth error", endpoint: "oauth.token", status: 400,
			body:        `{"error":"invalid_client","error_description":"Invalid OAuth client credentials"}`,
			wantMessage: "invalid_client", wantDetail: "Invalid OAuth client credentials",
		},
		{
			name: "html page from a proxy", endpoint: "runners.list", status: 502,
			body: "<html><body><h1>502 Bad Gateway</h1></body></html>",
		},
		{
			name: "plain text keeps first line", endpoint: "runners.list", status: 500,
			body: "upstream failed\nstack trace line", wantMessage: "upstream failed",
		},
		{name: "empty body", endpoint: "runners.delete", status: 404, is: []error{ErrNotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := decodeAPIError(http.MethodGet, tt.endpoint, tt.status, tt.header, []byte(tt.body), now)
			if err.Message != tt.wantMessage || err.Detail != tt.wantDetail {
				t.Errorf("message/detail = %q/%q, want %q/%q", err.Message, err.Detail, tt.wantMessage, tt.wantDetail)
			}
			if err.RetryAfter != tt.wantRetry {
				t.Errorf("RetryAfter = %s, want %s", err.RetryAfter, tt.wantRetry)
			}
			wrapped := fmt.Errorf("outer: %w", err)
			for _, target := range tt.is {
				if !errors.Is(wrapped, target) {
					t.Errorf("errors.Is(%v) = false, want true", target)
				}
			}
			for _, target := range tt.isNot {
				if errors.Is(wrapped, target) {
					t.Errorf("errors.Is(%v) = true, want false", target)
				}
			}
			var apiErr *APIError
			if !errors.As(wrapped, &apiErr) || apiErr.StatusCode != tt.status || apiErr.Endpoint != tt.endpoint {
				t.Errorf("errors.As did not give back the APIError")
			}
		})
	}
}

func TestAPIErrorMessageShape(t *testing.T) {
	err := &APIError{StatusCode: 409, Method: "POST", Endpoint: "runners.create", Message: "Runner limit reached", Detail: "max 100"}
	want := "bitbucket POST runners.create: 409 Conflict: Runner limit reached (max 100)"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestErrorMessageIsClipped(t *testing.T) {
	body := `{"type":"error","error":{"message":"` + strings.Repeat("x", 5000) + `"}}`
	err := decodeAPIError("GET", "runners.list", 500, nil, []byte(body), time.Now())
	if len(err.Message) > maxErrorMessageLen+3 {
		t.Errorf("message length %d not clipped", len(err.Message))
	}
}

func TestRetryAfterHelper(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		want   time.Duration
		wantOK bool
	}{
		{"budget", fmt.Errorf("x: %w", &BudgetExhaustedError{RetryAfter: 3 * time.Minute}), 3 * time.Minute, true},
		{"429 with header", fmt.Errorf("x: %w", &APIError{StatusCode: 429, RetryAfter: 5 * time.Second}), 5 * time.Second, true},
		{"429 without header", &APIError{StatusCode: 429}, 0, false},
		{"other", errors.New("boom"), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := RetryAfter(tt.err)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("RetryAfter = %s, %v; want %s, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
	if !IsBudgetExhausted(&BudgetExhaustedError{}) {
		t.Error("BudgetExhaustedError does not match ErrBudgetExhausted")
	}
}

func FuzzDecodeError(f *testing.F) {
	seeds := []string{
		`{"type":"error","error":{"message":"Runner limit reached","detail":"max 100"}}`,
		`{"error":{"message":"Bad request","data":{"arguments":{},"key":"rest-service.rest-service.invalid-sort-attribute"},"detail":"Invalid sort attribute provided 'completed_on'"}}`,
		`{"error":"invalid_client","error_description":"bad"}`,
		`{"message":"x"}`,
		`{"error":null}`,
		`{"error":[1,2]}`,
		`<html></html>`,
		"line1\nline2",
		"",
		"\xff\xfe",
	}
	for _, s := range seeds {
		f.Add(409, "7", []byte(s))
	}
	f.Add(429, "Wed, 21 Oct 2015 07:28:00 GMT", []byte("{}"))
	f.Add(400, "-1", []byte(`{"type":"error","error":{"message":"limit"}}`))
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		err := decodeAPIError("POST", "runners.create", status, http.Header{"Retry-After": {retryAfter}}, body, time.Now())
		if len(err.Message) > maxErrorMessageLen+3 || len(err.Detail) > maxErrorMessageLen+3 {
			t.Fatalf("unclipped message: %d/%d bytes", len(err.Message), len(err.Detail))
		}
		if err.RetryAfter < 0 || err.RetryAfter > 24*time.Hour {
			t.Fatalf("RetryAfter out of range: %s", err.RetryAfter)
		}
		_ = err.Error()
		_ = errors.Is(err, ErrLimitReached)
	})
}
