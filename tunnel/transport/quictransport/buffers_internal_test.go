package quictransport

import (
	"strings"
	"testing"
)

func TestBufferWarning(t *testing.T) {
	if w := bufferWarning(WantBuffer, WantBuffer); w != "" {
		t.Errorf("warning for big enough buffers: %q", w)
	}
	// This machine's default: net.core.rmem_max = wmem_max = 4 MiB.
	w := bufferWarning(4<<20, 4<<20)
	for _, want := range []string{"receive 4096 KiB", "send 4096 KiB", "7168 KiB", "sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000"} {
		if !strings.Contains(w, want) {
			t.Errorf("warning %q lacks %q", w, want)
		}
	}
}

func TestTakeBufferWarningOnce(t *testing.T) {
	bufMu.Lock()
	bufWarning, bufTaken = "small", false
	bufMu.Unlock()
	t.Cleanup(func() { bufMu.Lock(); bufWarning, bufTaken = "", false; bufMu.Unlock() })
	if w := TakeBufferWarning(); w != "small" {
		t.Fatalf("first take %q", w)
	}
	if w := TakeBufferWarning(); w != "" {
		t.Fatalf("second take %q", w)
	}
}
