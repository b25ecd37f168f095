package framework

import (
	"strings"
	"sync"
)

// LogBuffer collects log lines from several goroutines (an slog handler's
// writer), for tests that check what was logged or show it on failure.
type LogBuffer struct {
	mu sync.Mutex // guards b
	b  strings.Builder
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
