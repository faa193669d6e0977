package main

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	twenty := make([]float64, 20)
	for i := range twenty {
		twenty[i] = float64(20 - i) // 20, 19, ..., 1: order must not matter
	}
	tests := []struct {
		name   string
		values []float64
		p      float64
		want   float64
	}{
		{"p95 of 20 is the 19th smallest", twenty, 95, 19},
		{"p50 of 20 is the 10th smallest", twenty, 50, 10},
		{"p100 is the largest", twenty, 100, 20},
		{"a tiny p is the smallest", twenty, 0.1, 1},
		{"one value", []float64{7}, 95, 7},
		{"p50 of 3", []float64{3, 1, 2}, 50, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.values, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.values, tt.p, got, tt.want)
			}
		})
	}
	if got := percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("percentile of nothing = %v, want NaN", got)
	}
}

func TestExcessWaits(t *testing.T) {
	tests := []struct {
		name     string
		waits    []float64
		capacity int
		duration time.Duration
		want     []float64
	}{
		{
			name:  "second wave waits a step's duration at least",
			waits: []float64{2, 3, 64, 65}, capacity: 2, duration: time.Minute,
			want: []float64{2, 3, 4, 5},
		},
		{
			name:  "ranked, not matched by step",
			waits: []float64{65, 2, 64, 3}, capacity: 2, duration: time.Minute,
			want: []float64{2, 3, 4, 5},
		},
		{
			name:  "never below zero",
			waits: []float64{0, 0, 30}, capacity: 2, duration: time.Minute,
			want: []float64{0, 0, 0},
		},
		{
			name:  "enough runners: the raw waits",
			waits: []float64{1, 2, 3}, capacity: 10, duration: time.Minute,
			want: []float64{1, 2, 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := excessWaits(tt.waits, tt.capacity, tt.duration)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if math.Abs(got[i]-tt.want[i]) > 1e-9 {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}
