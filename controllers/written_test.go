package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

func TestWrittenStatus(t *testing.T) {
	runner := func(uid, version, uuid string) *v1alpha1.Runner {
		return &v1alpha1.Runner{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ci", Name: "builds-abcde", UID: types.UID(uid), ResourceVersion: version},
			Status:     v1alpha1.RunnerStatus{UUID: uuid},
		}
	}
	tests := []struct {
		name     string
		writes   [][2]string // resourceVersion read, resourceVersion written
		read     *v1alpha1.Runner
		wantUUID string
	}{
		{"nothing written: the cache is used", nil, runner("u1", "10", ""), ""},
		{"the cache shows the version the write was made on: the written status is used", [][2]string{{"10", "11"}}, runner("u1", "10", ""), "{written}"},
		{"the cache shows the write: it is used", [][2]string{{"10", "11"}}, runner("u1", "11", "{cached}"), "{cached}"},
		{"the cache shows a later version: it is used", [][2]string{{"10", "11"}}, runner("u1", "12", "{cached}"), "{cached}"},
		{"a Runner of the same name made again is not taken for the old one", [][2]string{{"10", "11"}}, runner("u2", "10", ""), ""},
		{"a second write on a stale copy: the cache may show either earlier version", [][2]string{{"10", "11"}, {"10", "12"}}, runner("u1", "11", "{cached}"), "{written}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w writtenStatus
			for _, wr := range tt.writes {
				w.remember(runner("u1", wr[1], "{written}"), wr[0])
			}
			got := tt.read.DeepCopy()
			w.apply(got)
			if got.Status.UUID != tt.wantUUID {
				t.Errorf("status uuid = %q, want %q", got.Status.UUID, tt.wantUUID)
			}
		})
	}
}

func TestHeldStatus(t *testing.T) {
	runner := func(uid, uuid string) *v1alpha1.Runner {
		return &v1alpha1.Runner{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ci", Name: "builds-abcde", UID: types.UID(uid)},
			Status:     v1alpha1.RunnerStatus{UUID: uuid},
		}
	}
	tests := []struct {
		name       string
		read       *v1alpha1.Runner
		wantUUID   string
		wantStored bool
	}{
		{"the stored status is the one held over: the held status is used", runner("u1", ""), "{held}", true},
		{"a status written since wins", runner("u1", "{written}"), "{written}", false},
		{"a Runner of the same name made again is not taken for the old one", runner("u2", ""), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h heldStatus
			h.hold(runner("u1", "{held}"), v1alpha1.RunnerStatus{})
			got := tt.read.DeepCopy()
			h.apply(got)
			if got.Status.UUID != tt.wantUUID {
				t.Errorf("status uuid = %q, want %q", got.Status.UUID, tt.wantUUID)
			}
			if _, ok := h.stored(got); ok != tt.wantStored {
				t.Errorf("stored status known = %t, want %t", ok, tt.wantStored)
			}
		})
	}
}
