package controllers

import (
	"bytes"
	"encoding/json"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

// poolScope is the Bitbucket workspace or repository the pool registers its runners in.
func poolScope(pool *v1alpha1.RunnerPool) bitbucket.Scope {
	return bitbucket.Scope{Workspace: string(pool.Spec.Bitbucket.Workspace), Repository: string(pool.Spec.Bitbucket.Repository)}
}

// scopeOf is the Bitbucket workspace or repository the runner is registered in.
func scopeOf(runner *v1alpha1.Runner) bitbucket.Scope {
	return bitbucket.Scope{Workspace: string(runner.Spec.Workspace), Repository: string(runner.Spec.Repository)}
}

func setCondition(runner *v1alpha1.Runner, condType string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&runner.Status.Conditions, metav1.Condition{
		Type: condType, Status: status, Reason: reason, Message: message, ObservedGeneration: runner.Generation,
	})
}

func setPoolCondition(pool *v1alpha1.RunnerPool, condType string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&pool.Status.Conditions, metav1.Condition{
		Type: condType, Status: status, Reason: reason, Message: message, ObservedGeneration: pool.Generation,
	})
}

// equalStatus reports two statuses that would be stored alike. They are compared as the API
// server stores them, in JSON: a time known to the nanosecond here is kept to the second there,
// so a status that differs only below the second would be a patch that changes nothing.
func equalStatus(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	if errA != nil || errB != nil {
		return equality.Semantic.DeepEqual(a, b)
	}
	return bytes.Equal(ja, jb)
}

// throttled turns "Bitbucket says wait" (rate limited, or the request budget spent) into a
// requeue after the wait instead of an error, so the work queue's backoff does not add to it
// and logs do not fill with errors for an expected condition.
func throttled(res ctrl.Result, err error) (ctrl.Result, error) {
	if err == nil || !(bitbucket.IsRateLimited(err) || bitbucket.IsBudgetExhausted(err)) {
		return res, err
	}
	wait, ok := bitbucket.RetryAfter(err)
	if !ok || wait <= 0 {
		wait = 30 * time.Second
	}
	return ctrl.Result{RequeueAfter: wait}, nil
}

func conditionReason(conds []metav1.Condition, condType string) string {
	if c := meta.FindStatusCondition(conds, condType); c != nil {
		return c.Reason
	}
	return ""
}
