package tcptransport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/porthole-dev/porthole/tunnel/transport"
)

// Control stream frames: type (1 byte), payload length (2 bytes, big endian),
// payload.
const (
	frameDatagram = 1 // payload: the datagram
	frameClose    = 2 // code (8), reason
	frameFIN      = 3 // stream ID (4), final size (8)
	frameAbort    = 4 // stream ID (4), code (8), flags (1)

	frameHeader  = 3
	maxFrameLen  = 2048 // bigger than any frame above; more is a protocol error
	maxCloseMsg  = 1024
	abortReset   = 1 // the sender stopped writing: the receiver's reads fail
	abortStopped = 2 // the sender stopped reading: the receiver's writes fail
)

var errProtocol = errors.New("tcptransport: protocol violation on the control stream")

func appendFrameHeader(b []byte, typ byte, n int) []byte {
	return append(b, typ, byte(n>>8), byte(n))
}

func appendClose(b []byte, code uint64, msg string) []byte {
	if len(msg) > maxCloseMsg {
		msg = msg[:maxCloseMsg]
	}
	b = appendFrameHeader(b, frameClose, 8+len(msg))
	b = binary.BigEndian.AppendUint64(b, code)
	return append(b, msg...)
}

func appendFIN(b []byte, id uint32, size uint64) []byte {
	b = appendFrameHeader(b, frameFIN, 12)
	b = binary.BigEndian.AppendUint32(b, id)
	return binary.BigEndian.AppendUint64(b, size)
}

func appendAbort(b []byte, id uint32, code uint64, flags byte) []byte {
	b = appendFrameHeader(b, frameAbort, 13)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint64(b, code)
	return append(b, flags)
}

// readControl reads control frames until the stream ends; it returns the
// close frame's error when one arrives.
func (c *Conn) readControl() error {
	r := bufio.NewReaderSize(c.ctl, 4<<10)
	var hdr [frameHeader]byte
	buf := make([]byte, maxFrameLen)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		n := int(hdr[1])<<8 | int(hdr[2])
		if n > maxFrameLen {
			return fmt.Errorf("%w: frame of %d bytes", errProtocol, n)
		}
		p := buf[:n]
		if _, err := io.ReadFull(r, p); err != nil {
			return err
		}
		switch hdr[0] {
		case frameDatagram:
			if n > transport.MaxDatagram {
				return fmt.Errorf("%w: datagram of %d bytes", errProtocol, n)
			}
			d := make([]byte, n)
			copy(d, p)
			select {
			case c.dgIn <- d:
			default: // the application is behind: drop, as UDP would
			}
		case frameClose:
			if n < 8 {
				return fmt.Errorf("%w: short close frame", errProtocol)
			}
			return &transport.CloseError{Code: binary.BigEndian.Uint64(p), Msg: string(p[8:]), Remote: true}
		case frameFIN:
			if n != 12 {
				return fmt.Errorf("%w: FIN frame of %d bytes", errProtocol, n)
			}
			if err := c.peerFIN(binary.BigEndian.Uint32(p), binary.BigEndian.Uint64(p[4:])); err != nil {
				return err
			}
		case frameAbort:
			if n != 13 {
				return fmt.Errorf("%w: abort frame of %d bytes", errProtocol, n)
			}
			if err := c.peerAbort(binary.BigEndian.Uint32(p), binary.BigEndian.Uint64(p[4:]), p[12]); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: frame type %d", errProtocol, hdr[0])
		}
	}
}

// writeDatagrams sends queued datagrams, as many per write as are waiting.
func (c *Conn) writeDatagrams() {
	var batch []byte
	for {
		select {
		case d := <-c.dgOut:
			batch = append(batch[:0], d.frame()...)
			dgPool.Put(d)
		more:
			for len(batch) < 32<<10 {
				select {
				case d := <-c.dgOut:
					batch = append(batch, d.frame()...)
					dgPool.Put(d)
				default:
					break more
				}
			}
			if err := c.writeControl(batch); err != nil {
				return
			}
		case <-c.ctx.Done():
			return
		}
	}
}

// writeControl writes whole frames; frames from different goroutines never
// interleave.
func (c *Conn) writeControl(b []byte) error {
	c.ctlMu.Lock()
	defer c.ctlMu.Unlock()
	_, err := c.ctl.Write(b)
	return err
}
