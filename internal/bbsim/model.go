package bbsim

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
)

type workspace struct {
	uuid  string
	slug  string
	repos []*repository
}

type repository struct {
	uuid string
	slug string
	ws   *workspace
}

func (r *repository) fullName() string { return r.ws.slug + "/" + r.slug }

// buildWorkspaces turns the configured workspaces into the live model, filling
// in missing identifiers so that every object has a braced UUID and a slug.
func buildWorkspaces(cfg []Workspace) []*workspace {
	out := make([]*workspace, 0, len(cfg))
	for i, w := range cfg {
		ws := &workspace{uuid: braced(w.UUID), slug: w.Slug}
		if ws.uuid == "" {
			ws.uuid = newUUID()
		}
		if ws.slug == "" {
			ws.slug = fmt.Sprintf("workspace-%d", i+1)
		}
		for j, r := range w.Repositories {
			repo := &repository{uuid: braced(r.UUID), slug: r.Slug, ws: ws}
			if repo.uuid == "" {
				repo.uuid = newUUID()
			}
			if repo.slug == "" {
				repo.slug = fmt.Sprintf("repository-%d", j+1)
			}
			ws.repos = append(ws.repos, repo)
		}
		out = append(out, ws)
	}
	return out
}

// braced normalises a UUID to Bitbucket's lowercase "{...}" form; it leaves
// an empty string empty.
func braced(id string) string {
	id = strings.TrimSpace(id)
	if id == "" {
		return ""
	}
	return "{" + strings.ToLower(strings.Trim(id, "{}")) + "}"
}

// sameID compares a path or request identifier with a stored braced UUID,
// accepting the identifier with or without braces.
func sameID(stored, given string) bool {
	return given != "" && strings.EqualFold(strings.Trim(stored, "{}"), strings.Trim(given, "{}"))
}

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("read random bytes: %v", err))
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	h := hex.EncodeToString(b[:])
	return "{" + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32] + "}"
}

// randomToken returns n random bytes as lowercase hex.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("read random bytes: %v", err))
	}
	return hex.EncodeToString(b)
}

// findWorkspace resolves a workspace by UUID (braced or not) or slug.
func (s *Server) findWorkspace(key string) *workspace {
	for _, ws := range s.workspaces {
		if sameID(ws.uuid, key) || ws.slug == key {
			return ws
		}
	}
	return nil
}

// findRepository resolves a repository of ws by UUID or slug.
func findRepository(ws *workspace, key string) *repository {
	for _, r := range ws.repos {
		if sameID(r.uuid, key) || r.slug == key {
			return r
		}
	}
	return nil
}

// resolveScope finds the workspace and, when repoKey is not empty, the
// repository; notFound names what is missing.
func (s *Server) resolveScope(wsKey, repoKey string) (ws *workspace, repo *repository, notFound string) {
	ws = s.findWorkspace(wsKey)
	if ws == nil {
		return nil, nil, fmt.Sprintf("Workspace %s not found", wsKey)
	}
	if repoKey == "" {
		return ws, nil, ""
	}
	repo = findRepository(ws, repoKey)
	if repo == nil {
		return nil, nil, fmt.Sprintf("Repository %s/%s not found", wsKey, repoKey)
	}
	return ws, repo, ""
}

// resetLocked puts the simulated world back to the state New builds from the
// options. Issued OAuth tokens survive so that a client holding one keeps
// working across a reset, as it would across a real Bitbucket incident.
func (s *Server) resetLocked() {
	s.workspaces = buildWorkspaces(s.opts.Workspaces)
	s.limiter = newRateLimiter()
	s.calls = map[string]int{}
	s.tokenRequests = map[string]int{}
	s.callsByCred = map[string]map[string]int{}
	s.rateLimitHits = map[string]int{}
	s.throttled = map[string]bool{}
	s.runners = map[string]*runner{}
	s.runnerOrder = nil
	s.steps = map[string]*step{}
	s.stepOrder = nil
	s.queue = nil
	s.pipelines = map[string]*pipeline{}
	s.pipelineSerial = map[string]int{}
	s.agentPods = map[string]*agentPod{}
	s.noMatch = s.opts.NoMatch
	s.hourlyLimit = s.opts.HourlyLimit
	s.stepSerial = 0
	s.needsSchedule = false
	s.rejectedHooks = nil
}
