package scaling

import (
	"testing"
	"time"

	"k8s.io/utils/ptr"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

func schedulePool(min, idle int32, ws ...v1alpha1.ScheduleWindow) *v1alpha1.RunnerPool {
	p := &v1alpha1.RunnerPool{}
	p.Spec.MinRunners, p.Spec.MaxRunners, p.Spec.Scaling.IdleRunners = min, 10, idle
	p.Spec.Schedules = ws
	return p
}

func at(t *testing.T, zone, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var (
	workHours = v1alpha1.ScheduleWindow{Name: "work", TimeZone: "Europe/Paris", Days: []v1alpha1.Weekday{"Mon", "Tue", "Wed", "Thu", "Fri"},
		Start: "08:00", End: "19:00", MinRunners: ptr.To[int32](3), IdleRunners: ptr.To[int32](2)}
	nightly = v1alpha1.ScheduleWindow{Name: "nightly", TimeZone: "Europe/Paris", Days: []v1alpha1.Weekday{"Fri"},
		Start: "22:00", End: "06:00", MinRunners: ptr.To[int32](5)}
	lunch   = v1alpha1.ScheduleWindow{Name: "lunch", TimeZone: "Europe/Paris", Start: "12:00", End: "14:00", IdleRunners: ptr.To[int32](0)}
	newYork = v1alpha1.ScheduleWindow{Name: "ny", TimeZone: "America/New_York", Start: "02:30", End: "24:00", MinRunners: ptr.To[int32](4)}
)

func TestEvaluateSchedules(t *testing.T) {
	tests := []struct {
		name       string
		pool       *v1alpha1.RunnerPool
		now        time.Time
		want       Schedule
		wantChange time.Time
	}{
		{
			name: "no schedules: the spec's values, no change",
			pool: schedulePool(1, 1), now: at(t, "UTC", "2026-03-02 10:00"),
			want: Schedule{MinRunners: 1, IdleRunners: 1},
		},
		{
			name: "inside working hours (a Monday in Paris)",
			pool: schedulePool(0, 0, workHours), now: at(t, "Europe/Paris", "2026-03-02 10:00"),
			want: Schedule{Active: "work", MinRunners: 3, IdleRunners: 2}, wantChange: at(t, "Europe/Paris", "2026-03-02 19:00"),
		},
		{
			name: "the window opens at its start and closes at its end",
			pool: schedulePool(0, 0, workHours), now: at(t, "Europe/Paris", "2026-03-02 19:00"),
			want: Schedule{MinRunners: 0, IdleRunners: 0}, wantChange: at(t, "Europe/Paris", "2026-03-03 08:00"),
		},
		{
			name: "Friday evening: the next change is Monday morning",
			pool: schedulePool(0, 0, workHours), now: at(t, "Europe/Paris", "2026-03-06 20:00"),
			want: Schedule{MinRunners: 0, IdleRunners: 0}, wantChange: at(t, "Europe/Paris", "2026-03-09 08:00"),
		},
		{
			name: "the time zone decides the day: 23:30 UTC Sunday is Monday in Tokyo",
			pool: schedulePool(0, 0, v1alpha1.ScheduleWindow{Name: "tokyo", TimeZone: "Asia/Tokyo", Days: []v1alpha1.Weekday{"Mon"}, Start: "08:00", End: "09:00", MinRunners: ptr.To[int32](2)}),
			now:  at(t, "UTC", "2026-03-01 23:30"),
			want: Schedule{Active: "tokyo", MinRunners: 2, IdleRunners: 0}, wantChange: at(t, "UTC", "2026-03-02 00:00"),
		},
		{
			name: "a window past midnight covers the next morning of the day it starts on",
			pool: schedulePool(0, 0, nightly), now: at(t, "Europe/Paris", "2026-03-07 05:59"),
			want: Schedule{Active: "nightly", MinRunners: 5, IdleRunners: 0}, wantChange: at(t, "Europe/Paris", "2026-03-07 06:00"),
		},
		{
			name: "a window past midnight does not cover the morning before it",
			pool: schedulePool(0, 0, nightly), now: at(t, "Europe/Paris", "2026-03-06 05:00"),
			want: Schedule{MinRunners: 0, IdleRunners: 0}, wantChange: at(t, "Europe/Paris", "2026-03-06 22:00"),
		},
		{
			name: "overlap: the first window in the list wins",
			pool: schedulePool(0, 1, workHours, lunch), now: at(t, "Europe/Paris", "2026-03-02 12:30"),
			want: Schedule{Active: "work", MinRunners: 3, IdleRunners: 2}, wantChange: at(t, "Europe/Paris", "2026-03-02 19:00"),
		},
		{
			name: "overlap the other way round: lunch first zeroes the idle buffer, work's minimum does not apply",
			pool: schedulePool(0, 1, lunch, workHours), now: at(t, "Europe/Paris", "2026-03-02 12:30"),
			want: Schedule{Active: "lunch", MinRunners: 0, IdleRunners: 0}, wantChange: at(t, "Europe/Paris", "2026-03-02 14:00"),
		},
		{
			name: "a window's minRunners never lowers spec.minRunners (what kubectl scale sets)",
			pool: schedulePool(5, 1, workHours), now: at(t, "Europe/Paris", "2026-03-02 10:00"),
			want: Schedule{Active: "work", MinRunners: 5, IdleRunners: 2}, wantChange: at(t, "Europe/Paris", "2026-03-02 19:00"),
		},
		{
			name: "a window that sets only idleRunners keeps the spec's minimum",
			pool: schedulePool(2, 1, lunch), now: at(t, "Europe/Paris", "2026-03-02 13:00"),
			want: Schedule{Active: "lunch", MinRunners: 2, IdleRunners: 0}, wantChange: at(t, "Europe/Paris", "2026-03-02 14:00"),
		},
		{
			name: "spring forward: 08:00 stays 08:00 on the wall clock (the last Sunday of March in Paris)",
			pool: schedulePool(0, 0, v1alpha1.ScheduleWindow{Name: "sun", TimeZone: "Europe/Paris", Days: []v1alpha1.Weekday{"Sun"}, Start: "08:00", End: "09:00", MinRunners: ptr.To[int32](1)}),
			now:  at(t, "UTC", "2026-03-29 06:00"), // 08:00 CEST
			want: Schedule{Active: "sun", MinRunners: 1, IdleRunners: 0}, wantChange: at(t, "UTC", "2026-03-29 07:00"),
		},
		{
			name: "spring forward: a start the clock skips (02:30) opens when the clock jumps to 03:00",
			pool: schedulePool(0, 0, newYork), now: at(t, "UTC", "2026-03-08 06:00"), // 01:00 EST
			want: Schedule{MinRunners: 0, IdleRunners: 0}, wantChange: at(t, "UTC", "2026-03-08 07:00"), // 03:00 EDT
		},
		{
			name: "fall back: the window stays open through the repeated hour and closes at midnight",
			pool: schedulePool(0, 0, newYork), now: at(t, "UTC", "2026-11-01 06:30"), // 01:30 EST, second time
			want: Schedule{MinRunners: 0, IdleRunners: 0}, wantChange: at(t, "UTC", "2026-11-01 07:30"), // 02:30 EST
		},
		{
			name: "whole day 00:00-24:00 on weekends",
			pool: schedulePool(1, 1, v1alpha1.ScheduleWindow{Name: "weekend", Days: []v1alpha1.Weekday{"Sat", "Sun"}, Start: "00:00", End: "24:00", IdleRunners: ptr.To[int32](0)}),
			now:  at(t, "UTC", "2026-03-07 23:59"),
			want: Schedule{Active: "weekend", MinRunners: 1, IdleRunners: 0}, wantChange: at(t, "UTC", "2026-03-09 00:00"),
		},
		{
			name: "an empty time zone is UTC",
			pool: schedulePool(0, 0, v1alpha1.ScheduleWindow{Name: "utc", Start: "10:00", End: "11:00", MinRunners: ptr.To[int32](1)}),
			now:  at(t, "UTC", "2026-03-07 10:15"),
			want: Schedule{Active: "utc", MinRunners: 1, IdleRunners: 0}, wantChange: at(t, "UTC", "2026-03-07 11:00"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EvaluateSchedules(tt.pool, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if got.Active != tt.want.Active || got.MinRunners != tt.want.MinRunners || got.IdleRunners != tt.want.IdleRunners {
				t.Errorf("got %q min %d idle %d; want %q min %d idle %d", got.Active, got.MinRunners, got.IdleRunners, tt.want.Active, tt.want.MinRunners, tt.want.IdleRunners)
			}
			if !got.NextChange.Equal(tt.wantChange) {
				t.Errorf("next change %s; want %s", got.NextChange.UTC(), tt.wantChange.UTC())
			}
			if !got.NextChange.IsZero() && (got.NextBoundary.IsZero() || got.NextBoundary.After(got.NextChange)) {
				t.Errorf("next boundary %s is not before the next change %s", got.NextBoundary, got.NextChange)
			}
		})
	}
}

func TestEvaluateSchedulesUnknownZoneFallsBackToTheSpec(t *testing.T) {
	pool := schedulePool(1, 2, v1alpha1.ScheduleWindow{Name: "x", TimeZone: "Mars/Olympus", Start: "00:00", End: "24:00", MinRunners: ptr.To[int32](5)})
	got, err := EvaluateSchedules(pool, time.Now())
	if err == nil {
		t.Fatal("want an error for an unknown time zone")
	}
	if got.MinRunners != 1 || got.IdleRunners != 2 || got.Active != "" {
		t.Errorf("got %+v; want the spec's values", got)
	}
}

func TestPlanPoolScalesWithTheScheduleInForce(t *testing.T) {
	pool := schedulePool(0, 0)
	pool.Spec.Scaling.Policy = v1alpha1.ScalingPolicyIdleBuffer
	now := time.Now()
	p := PlanPool(Observation{Pool: pool, Now: now, Schedule: &Schedule{MinRunners: 3, IdleRunners: 1}})
	if p.Desired != 3 || p.Create != 3 {
		t.Errorf("desired %d create %d; want 3 and 3", p.Desired, p.Create)
	}
	p = PlanPool(Observation{Pool: pool, Now: now, Schedule: &Schedule{MinRunners: 50, IdleRunners: 1}})
	if p.Desired != 10 {
		t.Errorf("desired %d; want max 10", p.Desired)
	}
	p = PlanPool(Observation{Pool: pool, Now: now})
	if p.Desired != 0 {
		t.Errorf("desired %d without a schedule; want 0", p.Desired)
	}
}
