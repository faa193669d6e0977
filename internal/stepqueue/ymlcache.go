package stepqueue

import (
	"container/list"
	"sync"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

// DefaultCommitCacheSize bounds how many commits' parsed pipeline files a
// Store keeps. A commit's file never changes, so an entry is never stale;
// the bound only keeps memory flat on a busy workspace. 512 commits cover
// the 20 pipelines read per refresh of many repositories.
const DefaultCommitCacheSize = 512

type commitKey struct {
	apiURL, workspace, repository, commit string
}

// parsedFile is what a commit's bitbucket-pipelines.yml told us: its steps,
// or why it cannot tell anything (the file is missing or does not parse).
// Both are permanent for that commit.
type parsedFile struct {
	specs  []bitbucket.PipelineStepSpec
	reason string
}

// fileCache is a least-recently-used map of commits to parsed files.
type fileCache struct {
	mu    sync.Mutex
	size  int
	order *list.List // front: most recently used; values are *fileEntry
	byKey map[commitKey]*list.Element
}

type fileEntry struct {
	key  commitKey
	file parsedFile
}

func newFileCache(size int) *fileCache {
	if size <= 0 {
		size = DefaultCommitCacheSize
	}
	return &fileCache{size: size, order: list.New(), byKey: map[commitKey]*list.Element{}}
}

func (c *fileCache) get(k commitKey) (parsedFile, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[k]
	if !ok {
		return parsedFile{}, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*fileEntry).file, true
}

func (c *fileCache) put(k commitKey, f parsedFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[k]; ok {
		el.Value.(*fileEntry).file = f
		c.order.MoveToFront(el)
		return
	}
	c.byKey[k] = c.order.PushFront(&fileEntry{key: k, file: f})
	for c.order.Len() > c.size {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.byKey, oldest.Value.(*fileEntry).key)
	}
}

func (c *fileCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
