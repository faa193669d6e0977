package controllers

import (
	"errors"
	"fmt"
	"testing"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

func TestThrottled(t *testing.T) {
	rateLimited := &bitbucket.APIError{StatusCode: 429, Method: "GET", Endpoint: "runners.list", RetryAfter: 7 * time.Second}
	budget := &bitbucket.BudgetExhaustedError{Method: "GET", Endpoint: "runners.list", RetryAfter: 40 * time.Second}
	unavailable := &bitbucket.APIError{StatusCode: 503, Method: "GET", Endpoint: "runners.list", RetryAfter: 7 * time.Second}
	tests := []struct {
		name    string
		res     ctrl.Result
		err     error
		want    ctrl.Result
		wantErr error
	}{
		{"a success passes through", ctrl.Result{RequeueAfter: 15 * time.Second}, nil, ctrl.Result{RequeueAfter: 15 * time.Second}, nil},
		{"an ordinary error passes through to the work queue's backoff", ctrl.Result{}, unavailable, ctrl.Result{}, unavailable},
		{"a rate limit waits as long as Bitbucket asks, without an error", ctrl.Result{}, rateLimited, ctrl.Result{RequeueAfter: 7 * time.Second}, nil},
		{"a rate limit deep in the error chain is recognised", ctrl.Result{}, fmt.Errorf("list runners: %w", rateLimited), ctrl.Result{RequeueAfter: 7 * time.Second}, nil},
		{"a rate limit without a wait waits 30 seconds", ctrl.Result{}, &bitbucket.APIError{StatusCode: 429}, ctrl.Result{RequeueAfter: 30 * time.Second}, nil},
		{"a spent request budget waits for its next slot", ctrl.Result{}, fmt.Errorf("create runner: %w", budget), ctrl.Result{RequeueAfter: 40 * time.Second}, nil},
		{"a spent request budget with no known slot waits 30 seconds", ctrl.Result{}, &bitbucket.BudgetExhaustedError{}, ctrl.Result{RequeueAfter: 30 * time.Second}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := throttled(tt.res, tt.err)
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("throttled = %+v, %v; want %+v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
