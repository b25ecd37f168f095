package proto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// ALPN is the TLS application protocol of a Porthole tunnel.
const ALPN = "porthole/1"

// Version is the control protocol version this package speaks.
const Version = 1

// MaxFrame bounds a control frame (type byte plus body).
const MaxFrame = 64 << 10

// Type identifies a control message.
type Type uint8

// Control message types. Values are part of the wire format: never renumber.
const (
	TypeHello        Type = 1
	TypeRelayProof   Type = 2
	TypeAgentProof   Type = 3
	TypeWelcome      Type = 4
	TypeRefused      Type = 5
	TypeRegister     Type = 6
	TypeRegistered   Type = 7
	TypePing         Type = 8
	TypePong         Type = 9
	TypeProbeRequest Type = 10
	TypeProbeResult  Type = 11
)

// ErrFrameTooLarge is returned for frames over [MaxFrame].
var ErrFrameTooLarge = errors.New("proto: frame too large")

// ErrEmptyFrame is returned for a frame of length zero.
var ErrEmptyFrame = errors.New("proto: empty frame")

// Hello opens the control stream (agent -> relay).
type Hello struct {
	Version  int    `json:"v"`
	Name     string `json:"name"`
	Software string `json:"sw,omitempty"`
	// Features the agent speaks beyond Version (FeatureBareDatagrams).
	Features []string `json:"features,omitempty"`
}

// FeatureBareDatagrams: datagrams may travel as bare UDP packets beside the
// QUIC connection (transport.BareDatagrams). Both sides must name it: the
// agent in Hello, the relay in Welcome; an older peer ignores it.
const FeatureBareDatagrams = "bare-datagrams"

// RelayProof is the relay's proof of the token (relay -> agent), sent first.
type RelayProof struct {
	MAC []byte `json:"mac"`
}

// AgentProof is the agent's proof of the token (agent -> relay).
type AgentProof struct {
	MAC []byte `json:"mac"`
}

// Welcome ends a successful handshake (relay -> agent).
type Welcome struct {
	// Observed is the agent's address as the relay sees it ("ip:port").
	Observed string `json:"observed"`
	// HeartbeatMillis is how often the agent should send Ping.
	HeartbeatMillis int `json:"hb_ms"`
	// PublicIP is the relay's public address, if configured (DNS target in relayed mode).
	PublicIP string `json:"public_ip,omitempty"`
	// Features are those of the agent's Hello that the relay uses on this
	// connection.
	Features []string `json:"features,omitempty"`
}

// Refused ends a failed handshake or rejects a message (relay -> agent).
type Refused struct {
	Reason string `json:"reason"`
}

// Service is one service an agent asks the relay to expose.
type Service struct {
	Name string `json:"name"`
	Port uint16 `json:"port"`
	// Proto is "tcp" (the default when empty) or "udp": the agent's WireGuard
	// port, which the relay forwards as datagrams (see [DatagramHeader]). A relay
	// that predates "udp" refuses such a service with a reason, like any other.
	Proto string `json:"proto,omitempty"`
	// Allow is the access rule: CIDR prefixes, or ["any"]. For "udp" the relay
	// drops packets from other sources.
	Allow []string `json:"allow"`
}

// Register replaces the set of services the agent exposes (agent -> relay).
type Register struct {
	Services []Service `json:"services"`
}

// ServiceResult says whether one service was accepted.
type ServiceResult struct {
	Name     string `json:"name"`
	Port     uint16 `json:"port"`
	Accepted bool   `json:"ok"`
	Reason   string `json:"reason,omitempty"`
}

// Registered answers Register (relay -> agent).
type Registered struct {
	Results []ServiceResult `json:"results"`
}

// Ping is the agent's heartbeat.
type Ping struct {
	Seq uint64 `json:"seq"`
	// Pad makes the packet carrying the ping large enough to draw a stateless
	// reset from a restarted relay: quic-go, as RFC 9000 section 10.3 advises,
	// doesn't answer packets of 42 bytes or less, and a bare ping fits in about 34.
	// The content is ignored. See PingPad.
	Pad string `json:"pad,omitempty"`
}

// PingPad is the padding the agent puts in every Ping: 32 bytes, which lifts a
// heartbeat packet to about 75 bytes.
const PingPad = "................................"

// Pong answers Ping and repeats the observed address, so the agent notices a change.
type Pong struct {
	Seq      uint64 `json:"seq"`
	Observed string `json:"observed"`
}

// ProbeRequest asks the relay to verify a direct path from outside (agent -> relay):
// the relay dials Addr and expects the agent's listener to answer the challenge.
type ProbeRequest struct {
	ID   uint64 `json:"id"`
	Addr string `json:"addr"`
	// Service names the service whose listener is at Addr.
	Service string `json:"service"`
	// Proto is "tcp" (empty: [ProbeLine]) or "udp" ([UDPProbe]).
	Proto string `json:"proto,omitempty"`
}

// ProbeResult is the outcome of a probe (relay -> agent).
type ProbeResult struct {
	ID     uint64 `json:"id"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
	// Millis is how long the probe took.
	Millis int `json:"ms,omitempty"`
}

// Message is any control message.
type Message interface{ Type() Type }

func (Hello) Type() Type        { return TypeHello }
func (RelayProof) Type() Type   { return TypeRelayProof }
func (AgentProof) Type() Type   { return TypeAgentProof }
func (Welcome) Type() Type      { return TypeWelcome }
func (Refused) Type() Type      { return TypeRefused }
func (Register) Type() Type     { return TypeRegister }
func (Registered) Type() Type   { return TypeRegistered }
func (Ping) Type() Type         { return TypePing }
func (Pong) Type() Type         { return TypePong }
func (ProbeRequest) Type() Type { return TypeProbeRequest }
func (ProbeResult) Type() Type  { return TypeProbeResult }

func newMessage(t Type) Message {
	switch t {
	case TypeHello:
		return &Hello{}
	case TypeRelayProof:
		return &RelayProof{}
	case TypeAgentProof:
		return &AgentProof{}
	case TypeWelcome:
		return &Welcome{}
	case TypeRefused:
		return &Refused{}
	case TypeRegister:
		return &Register{}
	case TypeRegistered:
		return &Registered{}
	case TypePing:
		return &Ping{}
	case TypePong:
		return &Pong{}
	case TypeProbeRequest:
		return &ProbeRequest{}
	case TypeProbeResult:
		return &ProbeResult{}
	}
	return nil
}

// AppendFrame appends m's frame to b.
func AppendFrame(b []byte, m Message) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return b, fmt.Errorf("proto: encode %T: %w", m, err)
	}
	n := 1 + len(body)
	if n > MaxFrame {
		return b, ErrFrameTooLarge
	}
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = append(b, byte(m.Type()))
	return append(b, body...), nil
}

// WriteMessage writes m as one frame.
func WriteMessage(w io.Writer, m Message) error {
	b, err := AppendFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadMessage reads one frame of at most [MaxFrame] bytes and decodes it. Frames of
// unknown type are skipped. The returned Message is a pointer (*Hello, *Ping, ...).
func ReadMessage(r io.Reader) (Message, error) { return ReadMessageMax(r, MaxFrame) }

// ReadMessageMax is ReadMessage for frames of at most limit bytes (at most
// MaxFrame). Memory grows with the bytes that arrive, not with the length a frame
// declares: a peer that announces 64 KiB and sends nothing costs a few KiB, not 64.
func ReadMessageMax(r io.Reader, limit int) (Message, error) {
	for {
		m, err := ReadFrame(r, limit)
		if errors.Is(err, ErrUnknownType) {
			continue
		}
		return m, err
	}
}

// ReadFrame reads and decodes one frame of at most limit bytes, like
// ReadMessageMax, but returns a frame of unknown type as an error wrapping
// [ErrUnknownType] instead of skipping it, so a receiver can count such frames
// against a budget.
func ReadFrame(r io.Reader, limit int) (Message, error) {
	limit = min(limit, MaxFrame)
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return nil, ErrEmptyFrame
	}
	if n > uint32(limit) {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	buf, err := readGrowing(r, int(n))
	if err != nil {
		return nil, unexpected(err)
	}
	return DecodeFrame(buf)
}

// readStep is the first allocation for a frame body; the buffer doubles as bytes
// arrive.
const readStep = 4 << 10

// readGrowing reads exactly n bytes, allocating as they arrive.
func readGrowing(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, readStep))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), cap(buf)))
		}
		end := min(n, cap(buf))
		k, err := io.ReadFull(r, buf[len(buf):end])
		buf = buf[:len(buf)+k]
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

// ErrUnknownType is wrapped by DecodeFrame and ReadFrame for a frame whose type
// this version doesn't know (a newer peer's message).
var ErrUnknownType = errors.New("proto: unknown message type")

// DecodeFrame decodes a frame without its length prefix: type byte, JSON body.
func DecodeFrame(buf []byte) (Message, error) {
	if len(buf) == 0 {
		return nil, ErrEmptyFrame
	}
	m := newMessage(Type(buf[0]))
	if m == nil {
		return nil, fmt.Errorf("%w %d", ErrUnknownType, buf[0])
	}
	if err := json.Unmarshal(buf[1:], m); err != nil {
		return nil, fmt.Errorf("proto: decode message type %d: %w", buf[0], err)
	}
	return m, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
