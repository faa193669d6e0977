// Package layercache decides which of a pool's PersistentVolumeClaims holds each runner's docker
// storage, and which claims are released or deleted. It is pure: the controllers read the claims,
// Runners and pods, ask here, and carry the answer out. The API server settles races: a claim is
// taken with an update at the resourceVersion the decision saw, created under a fixed name, and
// deleted with that resourceVersion as a precondition, so two runners never end up on one claim.
package layercache

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// Names the claims carry. The holder is the claim's ci.runnerpool.dev/runner label (v1alpha1.LabelRunner)
// with the Runner's UID beside it, so a later Runner of the same name is not taken for the holder.
const (
	// AnnotationIndex is the claim's place in the pool's set, 0 to maxRunners-1.
	AnnotationIndex = "ci.runnerpool.dev/layer-cache-index"
	// AnnotationSettings is Settings of the pool's layerCache the claim was made from.
	AnnotationSettings = "ci.runnerpool.dev/layer-cache-settings"
	// AnnotationHolderUID is the UID of the Runner named by the claim's runner label.
	AnnotationHolderUID = "ci.runnerpool.dev/runner-uid"
	// AnnotationTakenTime is when the holder took the claim (RFC 3339).
	AnnotationTakenTime = "ci.runnerpool.dev/taken-time"
)

// ReleaseGrace is how long a claim stays with a holder the pool cannot see before the pool frees
// it. The pool's caches of Runners and claims are separate watches: a claim just taken by a new
// Runner may show before that Runner does.
const ReleaseGrace = time.Minute

// ClaimName is the name of the pool's claim at index i.
func ClaimName(pool string, i int) string {
	return fmt.Sprintf("%s-layer-cache-%d", pool, i)
}

// Settings is a short hash of what a claim is made from (size, class, access modes): a claim
// made from other settings is replaced once free, since a claim's class and modes cannot change.
func Settings(spec *v1alpha1.LayerCacheSpec) string {
	if spec == nil {
		return ""
	}
	subject := struct {
		Size        string                              `json:"size"`
		Class       *string                             `json:"class"`
		AccessModes []corev1.PersistentVolumeAccessMode `json:"accessModes"`
	}{spec.Size.String(), spec.StorageClassName, AccessModes(spec)}
	encoded, err := json.Marshal(subject)
	if err != nil {
		panic("layercache: marshal settings: " + err.Error())
	}
	sum := sha256.Sum256(encoded)
	return hex.EncodeToString(sum[:5])
}

// AccessModes are the claims' access modes, ReadWriteOnce unless the pool says otherwise.
func AccessModes(spec *v1alpha1.LayerCacheSpec) []corev1.PersistentVolumeAccessMode {
	if len(spec.AccessModes) == 0 {
		return []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	modes := slices.Clone(spec.AccessModes)
	slices.Sort(modes)
	return modes
}

// Claim is what the decisions need of one of the pool's claims.
type Claim struct {
	Name  string
	Index int
	// Holder and HolderUID name the Runner the claim is given to; empty when free.
	Holder    string
	HolderUID string
	// TakenTime is when the holder took it.
	TakenTime time.Time
	// Current is true when the claim was made from the pool's present layerCache settings.
	Current bool
	// Deleting is true once the claim has a deletion timestamp.
	Deleting bool
}

// Free reports a claim nobody holds.
func (c Claim) Free() bool { return c.Holder == "" }

// Runner is what the decisions need of one of the pool's Runners.
type Runner struct {
	Name string
	UID  string
	// Recorded is the claim the Runner's status names, if any: after taking a claim, a Runner
	// may reconcile again before its cache shows the claim taken, and must then ask for the same
	// one again rather than take a second.
	Recorded string
}

func (c Claim) heldBy(r Runner) bool { return c.Holder == r.Name && c.HolderUID == r.UID }

// Action is what a runner does about its claim.
type Action string

const (
	// Keep: the runner holds the claim already.
	Keep Action = "Keep"
	// Take: the claim is free; give it to the runner.
	Take Action = "Take"
	// Create: make the claim at Index and give it to the runner.
	Create Action = "Create"
	// Wait: every claim the pool may keep is held or on its way out; look again later.
	Wait Action = "Wait"
)

// Choice is the claim a runner gets.
type Choice struct {
	Action Action
	// Claim is the claim's name (Keep, Take, Create).
	Claim string
	// Index is the claim's index (Keep, Take, Create).
	Index int
	// Reason says why, for a condition and the logs.
	Reason string
}

// Choose picks the claim of runner r among the pool's claims. maxClaims is the pool's
// maxRunners: a pool never keeps more claims than it may have runners. In order: the claim the
// runner holds; the claim its status names, if free; the free claim with the lowest index made
// from the current settings (the pool's claims are interchangeable, and a fixed order makes the
// choice easy to follow); a new claim at the lowest unused index; otherwise wait.
func Choose(pool string, r Runner, claims []Claim, maxClaims int) Choice {
	sorted := byIndex(claims)
	for _, c := range sorted {
		if c.heldBy(r) {
			return Choice{Action: Keep, Claim: c.Name, Index: c.Index, Reason: "the runner holds it"}
		}
	}
	takeable := func(c Claim) bool { return c.Free() && c.Current && !c.Deleting }
	if r.Recorded != "" {
		for _, c := range sorted {
			if c.Name == r.Recorded && takeable(c) {
				return Choice{Action: Take, Claim: c.Name, Index: c.Index, Reason: "the runner's status names it"}
			}
		}
	}
	for _, c := range sorted {
		if takeable(c) {
			return Choice{Action: Take, Claim: c.Name, Index: c.Index, Reason: "free"}
		}
	}
	if len(claims) < maxClaims {
		used := make(map[int]bool, len(claims))
		for _, c := range claims {
			used[c.Index] = true
		}
		for i := 0; ; i++ {
			if !used[i] {
				return Choice{Action: Create, Claim: ClaimName(pool, i), Index: i, Reason: "no free claim"}
			}
		}
	}
	return Choice{Action: Wait, Reason: fmt.Sprintf("all %d layer cache claims of the pool are in use or being replaced", len(claims))}
}

// Tidy is what the pool does with its claims.
type Tidy struct {
	// Release frees claims whose holder is gone and whose volume no pod mounts.
	Release []string
	// Delete removes free claims the pool no longer wants: made from other settings, beyond
	// maxClaims (the highest indices first), or all of them once the pool has no layer cache.
	Delete []string
}

// TidyClaims decides which claims to release and which to delete. runners are the pool's
// Runners; mounted names the claims some pod of the pool still mounts (a pod may outlive its
// Runner while it stops, and its daemon must be gone before another starts on the claim).
// enabled is false when the pool has no layer cache any more.
func TidyClaims(claims []Claim, runners []Runner, mounted map[string]bool, maxClaims int, enabled bool, now time.Time) Tidy {
	live := make(map[string]string, len(runners))
	for _, r := range runners {
		live[r.Name] = r.UID
	}
	var out Tidy
	var free []Claim
	kept := 0
	for _, c := range byIndex(claims) {
		if c.Deleting {
			continue
		}
		if !c.Free() {
			// Held claims count towards maxClaims until they are free; a claim released now is
			// weighed again at the next pass, from what the release wrote.
			kept++
			uid, exists := live[c.Holder]
			gone := !exists || uid != c.HolderUID
			if gone && !mounted[c.Name] && now.Sub(c.TakenTime) >= ReleaseGrace {
				out.Release = append(out.Release, c.Name)
			}
			continue
		}
		if mounted[c.Name] {
			// Free but still mounted: its Runner released it as its pod stopped, and the
			// pool's cache of pods lags. It is weighed again at a later pass.
			kept++
			continue
		}
		if !enabled || !c.Current {
			out.Delete = append(out.Delete, c.Name)
			continue
		}
		free = append(free, c)
	}
	// Beyond maxClaims, the free claims with the highest indices go first, so that the low
	// indices, which Choose prefers, stay in use.
	for i := len(free) - 1; i >= 0 && kept+i+1 > maxClaims; i-- {
		out.Delete = append(out.Delete, free[i].Name)
	}
	return out
}

func byIndex(claims []Claim) []Claim {
	sorted := slices.Clone(claims)
	slices.SortStableFunc(sorted, func(a, b Claim) int {
		return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.Name, b.Name))
	})
	return sorted
}
