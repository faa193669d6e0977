package scaling

import (
	"fmt"
	"slices"
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// Schedule is the capacity a pool's schedules give it at one instant (ADR 0024).
type Schedule struct {
	// Active names the window in force, "" outside every window.
	Active string
	// MinRunners and IdleRunners are what the pool scales with: spec.minRunners raised by the
	// window's minRunners, and the window's idleRunners or else spec.scaling.idleRunners.
	MinRunners, IdleRunners int32
	// NextChange is the next instant another window (or none) comes into force, zero when
	// nothing changes within a week. NextBoundary is the next instant any window opens or
	// closes, which is when the pool looks again; it is never later than NextChange.
	NextChange, NextBoundary time.Time
}

// scheduleHorizon bounds the search for the next change: every window repeats weekly, so a
// week and a day covers every boundary, a window past midnight included.
const scheduleHorizon = 8

// window is a ScheduleWindow parsed: its zone, its days and its hours in minutes of the day.
type window struct {
	name       string
	loc        *time.Location
	days       [7]bool // by time.Weekday
	start, end int     // minutes since midnight; end may be 1440, and below start past midnight
	min, idle  *int32
}

var weekdays = map[v1alpha1.Weekday]time.Weekday{
	"Sun": time.Sunday, "Mon": time.Monday, "Tue": time.Tuesday, "Wed": time.Wednesday,
	"Thu": time.Thursday, "Fri": time.Friday, "Sat": time.Saturday,
}

// parseWindows reads the windows. The schema already checks the shapes; what it cannot check
// is whether the time zone exists in the operator's time zone database.
func parseWindows(in []v1alpha1.ScheduleWindow) ([]window, error) {
	out := make([]window, 0, len(in))
	for _, w := range in {
		zone := w.TimeZone
		if zone == "" {
			zone = "UTC"
		}
		loc, err := time.LoadLocation(zone)
		if err != nil {
			return nil, fmt.Errorf("schedule %q: unknown time zone %q", w.Name, zone)
		}
		pw := window{name: w.Name, loc: loc, min: w.MinRunners, idle: w.IdleRunners}
		if pw.start, err = clockMinutes(w.Start); err != nil {
			return nil, fmt.Errorf("schedule %q: start: %w", w.Name, err)
		}
		if pw.end, err = clockMinutes(w.End); err != nil {
			return nil, fmt.Errorf("schedule %q: end: %w", w.Name, err)
		}
		if pw.start == pw.end || pw.start >= 24*60 {
			return nil, fmt.Errorf("schedule %q: start %s and end %s do not make a window", w.Name, w.Start, w.End)
		}
		if len(w.Days) == 0 {
			pw.days = [7]bool{true, true, true, true, true, true, true}
		}
		for _, d := range w.Days {
			wd, ok := weekdays[d]
			if !ok {
				return nil, fmt.Errorf("schedule %q: unknown day %q", w.Name, d)
			}
			pw.days[wd] = true
		}
		out = append(out, pw)
	}
	return out, nil
}

// clockMinutes parses HH:MM (00:00 to 24:00) into minutes since midnight.
func clockMinutes(s string) (int, error) {
	var h, m int
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	if _, err := fmt.Sscanf(s, "%02d:%02d", &h, &m); err != nil || h > 24 || m > 59 || (h == 24 && m != 0) {
		return 0, fmt.Errorf("%q is not a time between 00:00 and 24:00", s)
	}
	return h*60 + m, nil
}

// covers reports whether the window is in force at t, read on the wall clock of its zone. A
// window past midnight belongs to the day it starts on: Fri 22:00-06:00 covers Saturday 05:00.
func (w window) covers(t time.Time) bool {
	lt := t.In(w.loc)
	mins := lt.Hour()*60 + lt.Minute()
	day := lt.Weekday()
	if w.start < w.end {
		return w.days[day] && mins >= w.start && mins < w.end
	}
	yesterday := (day + 6) % 7
	return (w.days[day] && mins >= w.start) || (w.days[yesterday] && mins < w.end)
}

// boundaries are the instants after now at which the window opens or closes, up to the horizon.
// Each is the wall-clock time on each day in the window's zone; a time that a daylight saving
// change skips is passed when the clock jumps (02:30 on a spring-forward night is 03:00).
func (w window) boundaries(now time.Time) []time.Time {
	lt := now.In(w.loc)
	var out []time.Time
	for d := -1; d <= scheduleHorizon; d++ {
		for _, m := range []int{w.start, w.end} {
			t := time.Date(lt.Year(), lt.Month(), lt.Day()+d, 0, m, 0, 0, w.loc)
			if t.Hour()*60+t.Minute() != m%(24*60) {
				// The clock skips this time (a spring-forward gap) and time.Date resolved it
				// to before the gap: the wall clock passes it when the gap ends.
				_, t = t.ZoneBounds()
			}
			if t.After(now) {
				out = append(out, t)
			}
		}
	}
	return out
}

// activeWindow is the first window in force at t, or -1.
func activeWindow(ws []window, t time.Time) int {
	for i, w := range ws {
		if w.covers(t) {
			return i
		}
	}
	return -1
}

// EvaluateSchedules says what capacity the pool's schedules give it at now: the first window in
// force wins (list order is precedence), its minRunners raises spec.minRunners and its
// idleRunners replaces spec.scaling.idleRunners. It also finds when that next changes. Without
// schedules it returns the spec's values. It fails only on a time zone the operator does not
// know; the caller then scales with the spec's values and reports it.
func EvaluateSchedules(pool *v1alpha1.RunnerPool, now time.Time) (Schedule, error) {
	base := Schedule{MinRunners: pool.Spec.MinRunners, IdleRunners: pool.Spec.Scaling.IdleRunners}
	ws, err := parseWindows(pool.Spec.Schedules)
	if err != nil || len(ws) == 0 {
		return base, err
	}
	s := base
	cur := activeWindow(ws, now)
	if cur >= 0 {
		s = applyWindow(base, ws[cur])
	}
	var all []time.Time
	for _, w := range ws {
		all = append(all, w.boundaries(now)...)
	}
	slices.SortFunc(all, time.Time.Compare)
	for _, t := range all {
		if s.NextBoundary.IsZero() {
			s.NextBoundary = t
		}
		if activeWindow(ws, t) != cur {
			s.NextChange = t
			break
		}
	}
	return s, nil
}

// applyWindow is the base capacity as the window changes it.
func applyWindow(base Schedule, w window) Schedule {
	s := Schedule{Active: w.name, MinRunners: base.MinRunners, IdleRunners: base.IdleRunners}
	if w.min != nil && *w.min > s.MinRunners {
		s.MinRunners = *w.min
	}
	if w.idle != nil {
		s.IdleRunners = *w.idle
	}
	return s
}
