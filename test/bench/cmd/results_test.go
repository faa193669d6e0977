package main

import "testing"

// Every figure a scenario sets must be declared, or res.set panics at the end of a run.
func TestEphemeralFiguresAreDeclared(t *testing.T) {
	for _, v := range ephemeralVariants {
		for _, suffix := range []string{"_steps", "_runners", "_multi_step_runners", "_extra_steps", "_disable_p50_s", "_disable_p95_s", "_disable_max_s"} {
			if !knownFigure(v.key + suffix) {
				t.Errorf("figure %s is not declared", v.key+suffix)
			}
		}
	}
	seen := map[string]bool{}
	for _, f := range figures {
		if seen[f.key] {
			t.Errorf("figure %s is declared twice", f.key)
		}
		seen[f.key] = true
	}
}
