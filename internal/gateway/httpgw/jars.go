package httpgw

import (
	"net/http/cookiejar"
	"sync"
	"time"
)

// jars are the camera's cookies, kept at the agent: one jar per viewer
// session (or per viewer and source for Basic and link users), replayed
// upstream and never sent to the viewer, so a camera's session token never
// leaves home.
type jars struct {
	max  int
	idle time.Duration
	now  func() time.Time

	mu sync.Mutex // guards m
	m  map[string]*jarEntry
}

type jarEntry struct {
	jar  *cookiejar.Jar
	used time.Time
}

func newJars(max int, idle time.Duration, now func() time.Time) *jars {
	return &jars{max: max, idle: idle, now: now, m: map[string]*jarEntry{}}
}

// get returns key's jar, creating it; creating one forgets idle jars and, at
// the limit, the least recently used.
func (j *jars) get(key string) *cookiejar.Jar {
	now := j.now()
	j.mu.Lock()
	defer j.mu.Unlock()
	if e := j.m[key]; e != nil {
		e.used = now
		return e.jar
	}
	var oldest string
	var oldestAt time.Time
	for k, e := range j.m {
		if now.Sub(e.used) > j.idle {
			delete(j.m, k)
			continue
		}
		if oldest == "" || e.used.Before(oldestAt) {
			oldest, oldestAt = k, e.used
		}
	}
	if len(j.m) >= j.max {
		delete(j.m, oldest)
	}
	jar, _ := cookiejar.New(nil) // never fails without options
	j.m[key] = &jarEntry{jar: jar, used: now}
	return jar
}

// lookup returns key's jar, nil if it has none.
func (j *jars) lookup(key string) *cookiejar.Jar {
	j.mu.Lock()
	defer j.mu.Unlock()
	if e := j.m[key]; e != nil {
		e.used = j.now()
		return e.jar
	}
	return nil
}

// drop forgets key's jar (logout, session gone).
func (j *jars) drop(key string) {
	j.mu.Lock()
	delete(j.m, key)
	j.mu.Unlock()
}

func (j *jars) len() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.m)
}
