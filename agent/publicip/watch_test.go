package publicip

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestWatcherCoalesces(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		events := make(chan struct{})
		w := NewWatcher(WatcherConfig{Events: events})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- w.Run(ctx) }()

		// A burst of five changes within 100 ms is one signal, 200 ms after the first.
		start := time.Now()
		for range 5 {
			events <- struct{}{}
			time.Sleep(20 * time.Millisecond) // fake time: spacing the burst
		}
		<-w.C()
		if took := time.Since(start); took != 200*time.Millisecond {
			t.Errorf("signal after %s, want 200ms", took)
		}
		synctest.Wait()
		select {
		case <-w.C():
			t.Fatal("second signal for one burst")
		default:
		}

		// A later change is a new signal; an unread signal holds, no blocking.
		events <- struct{}{}
		time.Sleep(time.Second)
		events <- struct{}{}
		time.Sleep(time.Second)
		<-w.C()
		synctest.Wait()
		select {
		case <-w.C():
			t.Fatal("pending signals should merge into one")
		default:
		}

		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
}

func TestWatcherEventsClosed(t *testing.T) {
	log, lb := newLog()
	events := make(chan struct{})
	close(events)
	w := NewWatcher(WatcherConfig{Events: events, Logger: log})
	if err := w.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(lb.lines("level=WARN", "watch ended")) != 1 {
		t.Fatalf("no log line:\n%s", lb)
	}
}
