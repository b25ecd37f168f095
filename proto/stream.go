package proto

import (
	"errors"
	"fmt"
	"io"
)

// StreamKind says what a relay-opened stream is for.
type StreamKind uint8

// Stream kinds. Values are part of the wire format.
const (
	// StreamViewer carries one viewer's TCP connection to a service.
	StreamViewer StreamKind = 1
)

// StreamVersion is the version byte of a stream header.
const StreamVersion = 1

// MaxNameLen bounds service names and viewer addresses in a stream header.
const MaxNameLen = 255

// ErrBadHeader is wrapped by every stream-header decoding error.
var ErrBadHeader = errors.New("proto: bad stream header")

// StreamHeader starts every relay-opened stream:
//
//	version(1) kind(1) len(1) service(len) len(1) viewer(len)
type StreamHeader struct {
	Kind    StreamKind
	Service string
	// Viewer is the viewer's address as the relay sees it ("ip:port").
	Viewer string
}

// MarshalBinary encodes h.
func (h StreamHeader) MarshalBinary() ([]byte, error) {
	if len(h.Service) > MaxNameLen || len(h.Viewer) > MaxNameLen {
		return nil, fmt.Errorf("%w: field too long", ErrBadHeader)
	}
	b := make([]byte, 0, 4+len(h.Service)+len(h.Viewer))
	b = append(b, StreamVersion, byte(h.Kind), byte(len(h.Service)))
	b = append(b, h.Service...)
	b = append(b, byte(len(h.Viewer)))
	return append(b, h.Viewer...), nil
}

// ReadStreamHeader reads a header from r, consuming exactly its bytes.
func ReadStreamHeader(r io.Reader) (StreamHeader, error) {
	var h StreamHeader
	var fixed [3]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return h, fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	if fixed[0] != StreamVersion {
		return h, fmt.Errorf("%w: version %d", ErrBadHeader, fixed[0])
	}
	h.Kind = StreamKind(fixed[1])
	if h.Kind != StreamViewer {
		return h, fmt.Errorf("%w: kind %d", ErrBadHeader, fixed[1])
	}
	svc := make([]byte, fixed[2])
	if _, err := io.ReadFull(r, svc); err != nil {
		return h, fmt.Errorf("%w: %w", ErrBadHeader, unexpected(err))
	}
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return h, fmt.Errorf("%w: %w", ErrBadHeader, unexpected(err))
	}
	viewer := make([]byte, n[0])
	if _, err := io.ReadFull(r, viewer); err != nil {
		return h, fmt.Errorf("%w: %w", ErrBadHeader, unexpected(err))
	}
	h.Service, h.Viewer = string(svc), string(viewer)
	return h, nil
}
