package harness_test

import (
	"encoding/json"
	"testing"

	"github.com/runnerpool/runnerpool-operator/test/harness"
)

func TestSetAndUnsetField(t *testing.T) {
	spec := map[string]any{"bitbucket": map[string]any{"workspace": "w"}}
	harness.SetField("scaling.percentageIdle.scaleUpThreshold", "high")(spec)
	harness.UnsetField("bitbucket.workspace")(spec)
	harness.UnsetField("not.there")(spec)
	got, _ := json.Marshal(spec)
	if want := `{"bitbucket":{},"scaling":{"percentageIdle":{"scaleUpThreshold":"high"}}}`; string(got) != want {
		t.Errorf("spec = %s, want %s", got, want)
	}
}
