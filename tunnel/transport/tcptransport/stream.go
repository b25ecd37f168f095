package tcptransport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/porthole-dev/porthole/tunnel/transport"
)

// stream is a yamux stream with the seam's half-close and abort semantics,
// signalled on the control stream (see the package doc).
type stream struct {
	c  *Conn
	ys *yamux.Stream
	id uint32

	// Only the reading goroutine touches these.
	ysReadDL time.Time // deadline last given to yamux
	// Only the writing goroutine touches these.
	nwritten  uint64
	ysWriteDL time.Time

	mu          sync.Mutex    // guards the fields below
	gen         uint64        // bumped on every change a blocked call must see
	changed     chan struct{} // made by a reader that waits for a change; closed by wake
	readDL      time.Time     // the application's deadlines
	writeDL     time.Time
	finSent     bool
	peerFin     bool
	peerFinSize uint64
	nread       uint64 // bytes the application has read
	readAbort   error  // *transport.StreamError: reads fail with it
	writeAbort  error  // *transport.StreamError: writes fail with it
	closed      bool   // Close or Abort called
	yClosed     bool   // yamux FIN sent: finished both ways on this side
}

var _ transport.Stream = (*stream)(nil)

// timeoutError is returned past a deadline, like net.Conn's.
type timeoutError struct{}

func (timeoutError) Error() string   { return "tcptransport: i/o deadline reached" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Unwrap() error   { return os.ErrDeadlineExceeded }

// past is a deadline that has passed: given to yamux it wakes a blocked call.
var past = time.Unix(1, 0)

// wake makes blocked Read and Write calls look at the state again.
func (s *stream) wake() {
	s.mu.Lock()
	s.gen++
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	s.mu.Unlock()
	s.ys.SetReadDeadline(past)
	s.ys.SetWriteDeadline(past)
}

func expired(dl time.Time) bool { return !dl.IsZero() && !time.Now().Before(dl) }

func (s *stream) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		s.mu.Lock()
		gen, dl := s.gen, s.readDL
		if err := s.readAbort; err != nil {
			s.mu.Unlock()
			return 0, err
		}
		if s.peerFin && s.nread >= s.peerFinSize {
			s.mu.Unlock()
			return 0, io.EOF
		}
		p := b
		if s.peerFin && uint64(len(p)) > s.peerFinSize-s.nread {
			p = p[:s.peerFinSize-s.nread]
		}
		s.mu.Unlock()
		if s.c.closed.Load() {
			return 0, s.c.cause()
		}
		if expired(dl) {
			return 0, timeoutError{}
		}
		if !s.ysReadDL.Equal(dl) || s.ysReadDL.Equal(past) {
			s.ys.SetReadDeadline(dl)
			s.ysReadDL = dl
			s.mu.Lock()
			stale := s.gen != gen
			s.mu.Unlock()
			if stale {
				continue
			}
		}
		n, err := s.ys.Read(p)
		if n > 0 {
			s.mu.Lock()
			s.nread += uint64(n)
			s.mu.Unlock()
			return n, nil
		}
		switch {
		case err == nil:
		case errors.Is(err, yamux.ErrTimeout):
			s.ysReadDL = past // woken, or the application's deadline: look again
		case err == io.EOF:
			// yamux FIN: the peer is done both ways. Its FIN or abort frame was
			// sent before, and the control reader is about to apply it.
			s.mu.Lock()
			if s.gen != gen {
				s.mu.Unlock()
				continue
			}
			if s.changed == nil {
				s.changed = make(chan struct{})
			}
			changed := s.changed
			s.mu.Unlock()
			var timer <-chan time.Time
			if !dl.IsZero() {
				t := time.NewTimer(time.Until(dl))
				defer t.Stop()
				timer = t.C
			}
			select {
			case <-changed:
			case <-s.c.ctx.Done():
			case <-timer:
			}
		case errors.Is(err, yamux.ErrConnectionReset):
			return 0, &transport.StreamError{Code: transport.CodeStreamClosed, Remote: true}
		case errors.Is(err, yamux.ErrSessionShutdown):
			return 0, s.c.cause()
		default:
			return 0, err
		}
	}
}

func (s *stream) Write(b []byte) (int, error) {
	total := 0
	for {
		s.mu.Lock()
		gen, dl := s.gen, s.writeDL
		werr := s.writeAbort
		if werr == nil && s.finSent {
			werr = errors.New("tcptransport: write after CloseWrite")
		}
		s.mu.Unlock()
		if werr != nil {
			return total, werr
		}
		if s.c.closed.Load() {
			return total, s.c.cause()
		}
		if total == len(b) {
			return total, nil
		}
		if expired(dl) {
			return total, timeoutError{}
		}
		if !s.ysWriteDL.Equal(dl) || s.ysWriteDL.Equal(past) {
			s.ys.SetWriteDeadline(dl)
			s.ysWriteDL = dl
			s.mu.Lock()
			stale := s.gen != gen
			s.mu.Unlock()
			if stale {
				continue
			}
		}
		n, err := s.ys.Write(b[total:])
		total += n
		s.nwritten += uint64(n)
		switch {
		case err == nil:
		case errors.Is(err, yamux.ErrTimeout):
			s.ysWriteDL = past
		case errors.Is(err, yamux.ErrConnectionReset):
			return total, &transport.StreamError{Code: transport.CodeStreamClosed, Remote: true}
		case errors.Is(err, yamux.ErrSessionShutdown):
			return total, s.c.cause()
		case errors.Is(err, yamux.ErrStreamClosed):
			// Closed under us by an abort; the loop reports it.
			s.mu.Lock()
			known := s.writeAbort != nil
			s.mu.Unlock()
			if !known {
				return total, err
			}
		default:
			return total, err
		}
	}
}

// CloseWrite sends FIN: the peer reads to the end of what was written, then EOF.
func (s *stream) CloseWrite() error {
	s.mu.Lock()
	if s.finSent || s.writeAbort != nil {
		s.mu.Unlock()
		return nil
	}
	s.finSent = true
	size := s.nwritten
	s.mu.Unlock()
	if err := s.c.writeControl(appendFIN(nil, s.id, size)); err != nil {
		return fmt.Errorf("tcptransport: close write: %w", s.mapErr(err))
	}
	s.maybeFinish()
	return nil
}

func (s *stream) mapErr(err error) error {
	if errors.Is(err, yamux.ErrSessionShutdown) || s.c.closed.Load() {
		return s.c.cause()
	}
	return err
}

// Close aborts what is still open: the peer's reads fail unless FIN was sent,
// its writes fail unless it already sent FIN.
func (s *stream) Close() error {
	s.abort(transport.CodeStreamClosed, false)
	return nil
}

// Abort resets both directions with code.
func (s *stream) Abort(code uint64) { s.abort(code, true) }

func (s *stream) abort(code uint64, evenAfterFIN bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	local := &transport.StreamError{Code: code}
	var flags byte
	if s.writeAbort == nil && (!s.finSent || evenAfterFIN) {
		flags |= abortReset
	}
	if s.writeAbort == nil {
		s.writeAbort = local
	}
	if s.readAbort == nil && !s.peerFin {
		flags |= abortStopped
	}
	if s.readAbort == nil {
		s.readAbort = local
	}
	s.mu.Unlock()
	s.wake()
	if flags != 0 && !s.c.closed.Load() {
		s.c.writeControl(appendAbort(nil, s.id, code, flags))
	}
	s.maybeFinish()
}

func (s *stream) onPeerFIN(size uint64) {
	s.mu.Lock()
	s.peerFin, s.peerFinSize = true, size
	s.mu.Unlock()
	s.wake()
	s.maybeFinish()
}

func (s *stream) onPeerAbort(code uint64, flags byte) {
	remote := &transport.StreamError{Code: code, Remote: true}
	s.mu.Lock()
	if flags&abortReset != 0 && s.readAbort == nil && !(s.peerFin && s.nread >= s.peerFinSize) {
		s.readAbort = remote
	}
	if flags&abortStopped != 0 && s.writeAbort == nil && !s.finSent {
		s.writeAbort = remote
	}
	s.mu.Unlock()
	s.wake()
	s.maybeFinish()
}

// maybeFinish sends yamux's FIN once this side is done both ways: writing
// (FIN frame sent or aborted) and reading (peer's FIN arrived or aborted).
// The peer's control reader reaches the same point at once, so yamux frees
// the stream on both sides; StreamCloseTimeout covers a peer that doesn't.
func (s *stream) maybeFinish() {
	s.mu.Lock()
	done := (s.finSent || s.writeAbort != nil) && (s.peerFin || s.readAbort != nil)
	if !done || s.yClosed {
		s.mu.Unlock()
		return
	}
	s.yClosed = true
	s.mu.Unlock()
	s.ys.Close()
	s.c.unregister(s.id)
}

func (s *stream) SetDeadline(t time.Time) error {
	s.mu.Lock()
	s.readDL, s.writeDL = t, t
	s.mu.Unlock()
	s.wake()
	return nil
}

func (s *stream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.readDL = t
	s.mu.Unlock()
	s.wake()
	return nil
}

func (s *stream) SetWriteDeadline(t time.Time) error {
	s.mu.Lock()
	s.writeDL = t
	s.mu.Unlock()
	s.wake()
	return nil
}
