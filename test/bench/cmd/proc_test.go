package main

import (
	"math"
	"testing"
)

func TestParseCPUSeconds(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    float64
		wantErr bool
	}{
		{
			name: "utime and stime",
			stat: "4242 (manager) S 1 4242 4242 0 -1 4194560 5000 0 0 0 1234 566 0 0 20 0 12 0 100 0 0",
			want: 18,
		},
		{
			name: "command name with spaces and parentheses",
			stat: "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 250 50 0 0 20 0 1 0 1 0 0",
			want: 3,
		},
		{name: "truncated", stat: "7 (x) R 1 7", wantErr: true},
		{name: "no command", stat: "garbage", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCPUSeconds(tt.stat)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %t", err, tt.wantErr)
			}
			if !tt.wantErr && math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("got %v s, want %v s", got, tt.want)
			}
		})
	}
}

func TestStatusMiB(t *testing.T) {
	const status = "Name:\tmanager\nVmHWM:\t  204800 kB\nVmRSS:\t   102400 kB\nThreads:\t12\n"
	tests := []struct {
		name    string
		field   string
		want    float64
		wantErr bool
	}{
		{name: "resident set", field: "VmRSS", want: 100},
		{name: "peak", field: "VmHWM", want: 200},
		{name: "missing", field: "VmSwap", wantErr: true},
		{name: "not in kB", field: "Threads", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := statusMiB(status, tt.field)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %t", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("got %v MiB, want %v MiB", got, tt.want)
			}
		})
	}
}
