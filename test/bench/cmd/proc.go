package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// processCPU returns the user + system CPU seconds a process has used.
func processCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time of %d: %w", pid, err)
	}
	return parseCPUSeconds(string(data))
}

// parseCPUSeconds reads utime and stime (fields 14 and 15 of proc(5)) from a /proc/<pid>/stat
// line. The command name (field 2) may hold spaces and parentheses, so fields are counted from
// the last ')'.
func parseCPUSeconds(stat string) (float64, error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("parse /proc stat: no command name")
	}
	fields := strings.Fields(stat[end+1:])
	// fields[0] is field 3 (state), so field n is fields[n-3].
	if len(fields) < 13 {
		return 0, fmt.Errorf("parse /proc stat: %d fields", len(fields))
	}
	var total float64
	for _, f := range fields[11:13] {
		ticks, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc stat cpu time %q: %w", f, err)
		}
		total += float64(ticks) / clockTicks
	}
	return total, nil
}

// processMemory returns a process's resident set and its peak (VmRSS and VmHWM), in MiB.
func processMemory(pid int) (rss, peak float64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read memory of %d: %w", pid, err)
	}
	if rss, err = statusMiB(string(data), "VmRSS"); err != nil {
		return 0, 0, err
	}
	if peak, err = statusMiB(string(data), "VmHWM"); err != nil {
		return 0, 0, err
	}
	return rss, peak, nil
}

// statusMiB reads a "Name:   1234 kB" line of /proc/<pid>/status, in MiB.
func statusMiB(status, name string) (float64, error) {
	for line := range strings.Lines(status) {
		value, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("parse /proc status %s: %q", name, strings.TrimSpace(line))
		}
		kb, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc status %s: %w", name, err)
		}
		return float64(kb) / 1024, nil
	}
	return 0, fmt.Errorf("parse /proc status: no %s", name)
}
