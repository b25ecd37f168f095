package quictransport

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// raiseBuffers asks for WantBuffer both ways, then (as quic-go does) with the
// FORCE options that root may use beyond the sysctl limits, and reports the
// sizes the application got.
func raiseBuffers(pc net.PacketConn) (rcv, snd int, err error) {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return 0, 0, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		f := int(fd)
		get := func(opt int) int {
			v, err := unix.GetsockoptInt(f, unix.SOL_SOCKET, opt)
			if err != nil {
				serr = err
			}
			return v / 2 // the kernel reports twice what the application gets
		}
		if get(unix.SO_RCVBUF) < WantBuffer {
			_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUF, WantBuffer)
			if get(unix.SO_RCVBUF) < WantBuffer {
				_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, WantBuffer)
			}
		}
		if get(unix.SO_SNDBUF) < WantBuffer {
			_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_SNDBUF, WantBuffer)
			if get(unix.SO_SNDBUF) < WantBuffer {
				_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, WantBuffer)
			}
		}
		rcv, snd = get(unix.SO_RCVBUF), get(unix.SO_SNDBUF)
	})
	if cerr != nil {
		return 0, 0, cerr
	}
	return rcv, snd, serr
}
