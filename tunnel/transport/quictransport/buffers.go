package quictransport

import (
	"fmt"
	"net"
	"os"
	"sync"
)

// WantBuffer is the UDP socket buffer size (each direction) QUIC needs for full
// speed; quic-go asks for the same 7 MiB.
const WantBuffer = 7 << 20

// BufferHelp is the fix CheckBuffers suggests.
const BufferHelp = "sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000 " +
	"(and the same two lines in /etc/sysctl.d/ to keep them after a reboot)"

// CheckBuffers raises pc's socket buffers towards [WantBuffer] (as far as the
// system allows; root may exceed net.core.rmem_max) and returns "" when they are
// big enough, or else a warning in plain words with the command that fixes it.
// On Linux the size compared is what the application gets: half of what
// getsockopt reports (the kernel doubles the value for its bookkeeping).
func CheckBuffers(pc net.PacketConn) (warning string) {
	rcv, snd, err := raiseBuffers(pc)
	if err != nil {
		return ""
	}
	return bufferWarning(rcv, snd)
}

func bufferWarning(rcv, snd int) string {
	if rcv >= WantBuffer && snd >= WantBuffer {
		return ""
	}
	return fmt.Sprintf("the UDP socket buffers are small (receive %d KiB, send %d KiB; QUIC wants %d KiB each), "+
		"so the tunnel may lose packets and run slower at high bitrates; raise the system limits with: %s",
		rcv>>10, snd>>10, WantBuffer>>10, BufferHelp)
}

var (
	bufMu      sync.Mutex // guards the fields below
	bufWarning string     // first warning seen by Dial or Listen
	bufTaken   bool       // TakeBufferWarning has returned it
)

// noteBuffers checks a socket Dial or Listen is about to use and keeps the
// first warning for TakeBufferWarning.
func noteBuffers(pc net.PacketConn) {
	bufMu.Lock()
	done := bufWarning != "" || bufTaken
	bufMu.Unlock()
	if done {
		return
	}
	w := CheckBuffers(pc)
	bufMu.Lock()
	defer bufMu.Unlock()
	if w != "" && bufWarning == "" && !bufTaken {
		bufWarning = w
	}
}

// TakeBufferWarning returns the buffer warning of the first socket Dial or
// Listen found too small, once per process ("" before that and ever after), so
// a daemon can log it once however often it redials.
func TakeBufferWarning() string {
	bufMu.Lock()
	defer bufMu.Unlock()
	if bufTaken || bufWarning == "" {
		return ""
	}
	bufTaken = true
	return bufWarning
}

var silenceOnce sync.Once

// silenceQUICGoWarning turns off quic-go's own log.Printf about buffer sizes:
// CheckBuffers says it better, through the daemon's logger. A user's explicit
// setting of the variable wins.
func silenceQUICGoWarning() {
	silenceOnce.Do(func() {
		const env = "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING"
		if _, set := os.LookupEnv(env); !set {
			os.Setenv(env, "true")
		}
	})
}
