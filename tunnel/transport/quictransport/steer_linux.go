package quictransport

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// steerProgram returns 1 (the sibling, second in the reuseport group) for a
// packet whose first payload byte has neither bit 0x40 nor 0x80 set, else 0
// (quic-go's socket). An index the group does not have yet (no sibling) makes
// the kernel pick by hash among the sockets it has: the only one.
var steerProgram = mustAssemble([]bpf.Instruction{
	bpf.LoadAbsolute{Off: 0, Size: 1}, // reuseport programs see the UDP payload
	bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xc0},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 1},
	bpf.RetConstant{Val: 0},
	bpf.RetConstant{Val: 1},
})

func mustAssemble(ins []bpf.Instruction) []unix.SockFilter {
	raw, err := bpf.Assemble(ins)
	if err != nil {
		panic(err)
	}
	f := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		f[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return f
}

func setReusePort(c syscall.RawConn, steer bool) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		if serr == nil && steer {
			// Before bind: the program belongs to the group the bind makes.
			serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
				&unix.SockFprog{Len: uint16(len(steerProgram)), Filter: &steerProgram[0]})
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func listenSteered(network, address string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error { return setReusePort(c, true) }}
	pc, err := lc.ListenPacket(context.Background(), network, address)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// listenSibling binds a socket like uc (same network, so the same family and
// IPV6_V6ONLY, which the kernel's reuseport group requires) to uc's address.
func listenSibling(ctx context.Context, network string, uc *net.UDPConn) (*net.UDPConn, error) {
	la := uc.LocalAddr().(*net.UDPAddr)
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error { return setReusePort(c, false) }}
	pc, err := lc.ListenPacket(ctx, network, la.String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// batchReader reads up to n packets per system call (recvmmsg).
type batchReader struct {
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
}

func newBatchReader(uc *net.UDPConn, n int) *batchReader {
	r := &batchReader{pc: ipv4.NewPacketConn(uc), msgs: make([]ipv4.Message, n)}
	for i := range r.msgs {
		r.msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	return r
}

// read calls f for each packet of the next batch.
func (r *batchReader) read(f func(b []byte, from net.Addr)) error {
	n, err := r.pc.ReadBatch(r.msgs, 0)
	if err != nil {
		return err
	}
	for _, m := range r.msgs[:n] {
		f(m.Buffers[0][:m.N], m.Addr)
	}
	return nil
}
