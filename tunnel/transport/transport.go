// Package transport is the seam between the tunnel protocol and the bytes that
// carry it. The tunnel (package tunnel) sees only [Conn] and [Stream]; the
// implementations live beside it: QUIC (transport/quictransport) and, when UDP is
// blocked, TLS over TCP with a stream multiplexer (transport/tcptransport).
//
// Both implementations give the same guarantees: TLS 1.3 with keying-material
// export (channel binding for the token proofs), many bidirectional streams with
// half-close, unreliable datagrams of at least [MaxDatagram] bytes, and a close
// with an application code and reason that the peer sees as a [*CloseError].
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// MaxDatagram is the largest datagram payload every transport carries. A phone's
// WireGuard packet at MTU 1280 plus its header fits.
const MaxDatagram = 1350

// CodeStreamClosed is the stream error code Stream.Close sends for whatever it
// still has to abort (the same value as the gateway's "aborted", 1), so a peer
// reading from a closed stream sees a *StreamError, never a clean EOF.
const CodeStreamClosed uint64 = 1

// Conn is one tunnel connection between an agent and a relay.
type Conn interface {
	// OpenStream opens a bidirectional stream, waiting for flow-control credit.
	OpenStream(ctx context.Context) (Stream, error)
	// AcceptStream waits for the peer's next stream.
	AcceptStream(ctx context.Context) (Stream, error)
	// SendDatagram sends one unreliable datagram of at most MaxDatagram bytes;
	// it may drop it (queue full) without error.
	SendDatagram(b []byte) error
	// ReceiveDatagram waits for the next datagram.
	ReceiveDatagram(ctx context.Context) ([]byte, error)
	// ExportKeyingMaterial is the TLS exporter of this connection (RFC 8446 7.5).
	ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error)
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
	// CloseWithError closes the connection; the peer's pending and future calls
	// fail with a *CloseError carrying code and msg (Remote true). Idempotent.
	CloseWithError(code uint64, msg string) error
	// Context is done when the connection is closed; context.Cause tells why
	// (a *CloseError, ErrIdleTimeout, ErrPeerRestarted, or another error).
	Context() context.Context
	// Transport names the implementation: "quic" or "tcp".
	Transport() string
}

// BareDatagrams is implemented by transports that can carry datagrams as bare
// UDP packets on the connection's own addresses, beside the connection rather
// than inside it (QUIC: packets without QUIC's fixed bit, which its receiver
// sets aside). The tunnel's datagrams are WireGuard packets, encrypted and
// authenticated end to end by WireGuard; a second layer of encryption and
// QUIC's per-packet send loop cost the relay and the agent each about 20 CPU
// seconds per GB. Bare datagrams cost a UDP write and a read.
//
// A bare datagram is accepted only from the peer's current address, and only
// after EnableBareDatagrams: both sides call it when the handshake says both
// speak it, before the first ReceiveDatagram.
type BareDatagrams interface {
	// EnableBareDatagrams makes SendDatagram send bare UDP packets to the peer
	// and ReceiveDatagram return the peer's bare packets too. Every datagram
	// must start with a byte below 0x40 (proto's datagram header does).
	EnableBareDatagrams()
}

// BatchDatagrams is implemented by connections that send several datagrams
// with one system call (sendmmsg) when they can. A WireGuard burst through
// the relay is dozens of packets at once; one syscall each was the largest
// cost of forwarding them.
type BatchDatagrams interface {
	// SendDatagrams sends bufs in order, each as by SendDatagram, and returns
	// how many were sent before the first error.
	SendDatagrams(bufs [][]byte) (int, error)
}

// DatagramDropCounter is implemented by connections that queue the peer's
// datagrams for ReceiveDatagram and drop them when it falls behind, as a full
// UDP socket buffer would.
type DatagramDropCounter interface {
	// DatagramsDropped counts the datagrams dropped so.
	DatagramsDropped() uint64
}

// DatagramPoller is implemented by connections that can hand over a datagram
// already waiting without blocking, so that a reader can take a burst and
// forward it with one batched send.
type DatagramPoller interface {
	// TryReceiveDatagram returns a waiting datagram, or false at once.
	TryReceiveDatagram() ([]byte, bool)
}

// Stream is a bidirectional byte stream with TCP's half-close. It satisfies
// the gateway's Conn (Read, Write, Close, CloseWrite).
type Stream interface {
	io.Reader
	io.Writer
	// CloseWrite ends the write side (FIN); reading goes on.
	CloseWrite() error
	// Close aborts whatever is still open in both directions, never discarding
	// data already sent with a FIN. Idempotent.
	Close() error
	// Abort resets both directions with code; the peer's Read and Write fail with
	// a *StreamError carrying it (where the implementation can carry codes).
	Abort(code uint64)
	SetDeadline(t time.Time) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// CloseError is why a connection was closed by an application (either side).
type CloseError struct {
	Code   uint64
	Msg    string
	Remote bool // closed by the peer
}

func (e *CloseError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by peer"
	}
	if e.Msg == "" {
		return fmt.Sprintf("closed %s (code %d)", who, e.Code)
	}
	return fmt.Sprintf("closed %s: %s (code %d)", who, e.Msg, e.Code)
}

// StreamError is why a stream was aborted.
type StreamError struct {
	Code   uint64
	Remote bool
}

func (e *StreamError) Error() string {
	if e.Remote {
		return fmt.Sprintf("stream aborted by peer (code %d)", e.Code)
	}
	return fmt.Sprintf("stream aborted (code %d)", e.Code)
}

var (
	// ErrIdleTimeout: nothing arrived from the peer for the idle timeout.
	ErrIdleTimeout = errors.New("transport: no packets from the peer for the idle timeout")
	// ErrPeerRestarted: the peer answered with a stateless reset (QUIC) or a TCP
	// reset: it lost the connection's state, typically because it restarted and is
	// back. Redialing at once is right.
	ErrPeerRestarted = errors.New("transport: the peer restarted (reset)")
	// ErrDatagramTooLarge: SendDatagram was given more than MaxDatagram bytes, or
	// more than the path carries right now (QUIC before path MTU discovery).
	ErrDatagramTooLarge = errors.New("transport: datagram too large")
)

// Listener accepts tunnel connections (relay side).
type Listener interface {
	// Accept waits for the next connection whose TLS handshake completed.
	Accept(ctx context.Context) (Conn, error)
	Addr() net.Addr
	Close() error
}
