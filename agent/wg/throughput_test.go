package wg

import (
	"io"
	"testing"
	"time"
)

// TestThroughput measures TCP through the tunnel, phone to camera and back
// (the echo service), on each leg, and logs it; it fails only if the bytes
// do not come back whole.
func TestThroughput(t *testing.T) {
	alice := mustKey(t)
	r := newAgentRig(t, []Peer{{Name: "a", PublicKey: alice.PublicKey(), AllowedIP: aliceIP, Viewer: "alice"}})
	const size = 4 << 20
	for _, tc := range r.legs() {
		p := newPhone(t, alice, aliceIP, r.priv, tc.ep())
		ctx := ctxFor(t, 2*failBound)
		c, err := p.dial(ctx, portEcho)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * failBound))
		start := time.Now()
		go func() {
			io.CopyN(c, zeros{}, size)
		}()
		n, err := io.CopyN(io.Discard, c, size)
		el := time.Since(start)
		c.Close()
		if err != nil {
			t.Fatalf("%s: %d of %d bytes back: %v", tc.path, n, size, err)
		}
		t.Logf("%s leg: %d MiB each way in %v: %.0f Mbit/s each way (in process: phone, agent and echo share the CPUs)",
			tc.path, size>>20, el.Round(time.Millisecond), float64(size)*8/el.Seconds()/1e6)
		p.dev.Close()
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }
