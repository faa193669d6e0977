package controllers

import (
	"errors"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
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

func TestEqualStatus(t *testing.T) {
	at := time.Date(2026, 11, 27, 14, 24, 40, 0, time.UTC)
	status := func(observed time.Time, busy int32) v1alpha1.RunnerPoolStatus {
		t := metav1.NewTime(observed)
		return v1alpha1.RunnerPoolStatus{Busy: busy, LastObservedTime: &t}
	}
	tests := []struct {
		name string
		a, b v1alpha1.RunnerPoolStatus
		want bool
	}{
		{"the same status", status(at, 1), status(at, 1), true},
		{"times that differ below the second are stored alike", status(at, 1), status(at.Add(300*time.Millisecond), 1), true},
		{"a later second is a change", status(at, 1), status(at.Add(time.Second), 1), false},
		{"a count is a change", status(at, 1), status(at, 2), false},
		{"an empty status is not a filled one", v1alpha1.RunnerPoolStatus{}, status(at, 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := equalStatus(tt.a, tt.b); got != tt.want {
				t.Errorf("equalStatus = %t, want %t", got, tt.want)
			}
		})
	}
}
