package tunnel

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// TestNoLeakAfterSessions: sessions on both transports come and go, then the
// server stops; goroutines return to the baseline.
func TestNoLeakAfterSessions(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("sessions", func(t *testing.T) {
		e := startServer(t, nil)
		for i := range 10 {
			tr := TransportQUIC
			if i%2 == 1 {
				tr = TransportTCP
			}
			t.Run(tr, func(t *testing.T) {
				c, _ := startClient(t, e, "home", func(c *Config) { c.Transport = tr })
				ss := nextSession(t, e)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if _, err := c.Probe(ctx, ss.Observed(), "cam"); err != nil {
					t.Fatal(err)
				}
			})
			select {
			case <-e.gone:
			case <-time.After(10 * time.Second):
				t.Fatal("server did not see the session end")
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
