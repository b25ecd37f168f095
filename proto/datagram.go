package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// DatagramKind says what a tunnel datagram carries.
type DatagramKind uint8

// Datagram kinds. Values are part of the wire format.
const (
	// DatagramWireGuard carries one WireGuard packet between a phone and the agent.
	DatagramWireGuard DatagramKind = 1
)

// DatagramVersion is the version in every datagram header.
const DatagramVersion = 1

// DatagramHeaderLen is the size of a [DatagramHeader] on the wire.
const DatagramHeaderLen = 5

// ErrBadDatagram is wrapped by every datagram-header decoding error.
var ErrBadDatagram = errors.New("proto: bad datagram")

// DatagramHeader starts every tunnel datagram:
//
//	version<<4 | kind (1 byte)   flow id (4 bytes, big endian)   payload
//
// The flow id names one phone's UDP flow at the relay (its address and the public
// UDP port it sent to); the relay picks it and the agent echoes it in replies, so the
// relay knows where to send the answer without the agent learning anything it
// doesn't need. The relay never interprets the payload.
type DatagramHeader struct {
	Kind DatagramKind
	Flow uint32
}

// AppendDatagram appends h and payload to b.
func AppendDatagram(b []byte, h DatagramHeader, payload []byte) ([]byte, error) {
	if h.Kind == 0 || h.Kind > 0x0f {
		return b, fmt.Errorf("%w: kind %d", ErrBadDatagram, h.Kind)
	}
	b = append(b, DatagramVersion<<4|byte(h.Kind))
	b = binary.BigEndian.AppendUint32(b, h.Flow)
	return append(b, payload...), nil
}

// ParseDatagram splits a datagram into its header and payload (a sub-slice of b).
// Unknown versions and kinds are errors: the receiver drops the datagram.
func ParseDatagram(b []byte) (DatagramHeader, []byte, error) {
	var h DatagramHeader
	if len(b) < DatagramHeaderLen {
		return h, nil, fmt.Errorf("%w: %d bytes", ErrBadDatagram, len(b))
	}
	if v := b[0] >> 4; v != DatagramVersion {
		return h, nil, fmt.Errorf("%w: version %d", ErrBadDatagram, v)
	}
	h.Kind = DatagramKind(b[0] & 0x0f)
	if h.Kind != DatagramWireGuard {
		return h, nil, fmt.Errorf("%w: kind %d", ErrBadDatagram, h.Kind)
	}
	h.Flow = binary.BigEndian.Uint32(b[1:5])
	return h, b[DatagramHeaderLen:], nil
}
