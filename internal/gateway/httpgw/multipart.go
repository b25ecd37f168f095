package httpgw

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Limits on what a camera's MJPEG stream may send.
const (
	// maxFrame bounds one JPEG (and the junk skipped looking for a boundary).
	maxFrame = 8 << 20
	// maxPartHeader bounds a part's header block.
	maxPartHeader = 8 << 10
)

var (
	errFrameTooBig = errors.New("mjpeg part larger than 8 MiB")
	errPartHeader  = errors.New("mjpeg part header too large")
	errBadLength   = errors.New("mjpeg part has a bad Content-Length")
	errNoBoundary  = errors.New("no boundary within 8 MiB")
	errStreamEnded = errors.New("the camera ended the stream")
)

// partReader reads the parts of a camera's multipart/x-mixed-replace body.
// A part's Content-Length, when present, says where it ends; otherwise the
// body runs to the next boundary line. Cameras differ: some put the leading
// "--" into the boundary parameter itself, some send no blank line before a
// boundary, some end the stream without the closing "--".
type partReader struct {
	br    *bufio.Reader
	delim []byte // "--" + boundary
	alt   []byte // the boundary itself when it already starts with "--"; else nil
	max   int
	// synced: the last part ended at a boundary line already consumed, so
	// headers come next.
	synced bool
	ended  bool // the closing boundary was read
}

func newPartReader(r io.Reader, boundary string, max int) *partReader {
	p := &partReader{br: bufio.NewReaderSize(r, 64<<10), delim: []byte("--" + boundary), max: max}
	if len(boundary) > 2 && boundary[:2] == "--" {
		p.alt = []byte(boundary)
	}
	return p
}

// next returns the body of the next part. The slice is the caller's.
func (p *partReader) next() ([]byte, error) {
	if p.ended {
		return nil, errStreamEnded
	}
	if !p.synced {
		if err := p.skipToDelimiter(); err != nil {
			return nil, err
		}
	}
	p.synced = false
	n, err := p.headers()
	if err != nil {
		return nil, err
	}
	if n >= 0 {
		if n > p.max {
			return nil, errFrameTooBig
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(p.br, b); err != nil {
			return nil, unexpected(err)
		}
		return b, nil
	}
	return p.scan()
}

// delimiterLine reports whether line (without its line break) is a boundary
// line, and whether it is the closing one.
func (p *partReader) delimiterLine(line []byte) (ok, closing bool) {
	line = bytes.TrimRight(line, " \t\r\n")
	for _, d := range [][]byte{p.delim, p.alt} {
		if d == nil || !bytes.HasPrefix(line, d) {
			continue
		}
		switch rest := line[len(d):]; {
		case len(rest) == 0:
			return true, false
		case string(rest) == "--":
			return true, true
		}
	}
	return false, false
}

// skipToDelimiter reads up to and including the next boundary line.
func (p *partReader) skipToDelimiter() error {
	skipped := 0
	lineStart := true
	for {
		piece, err := p.br.ReadSlice('\n')
		skipped += len(piece)
		if skipped > p.max {
			return errNoBoundary
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			lineStart = false
			continue
		}
		if err != nil {
			return unexpected(err)
		}
		if lineStart {
			if ok, closing := p.delimiterLine(piece); ok {
				if closing {
					return errStreamEnded
				}
				return nil
			}
		}
		lineStart = true
	}
}

// headers reads a part's header block and returns its Content-Length, or
// -1 when it has none.
func (p *partReader) headers() (int, error) {
	n, size := -1, 0
	for {
		line, err := p.br.ReadSlice('\n')
		size += len(line)
		if errors.Is(err, bufio.ErrBufferFull) || size > maxPartHeader {
			return 0, errPartHeader
		}
		if err != nil {
			return 0, unexpected(err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return n, nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Length")) {
			continue
		}
		v, err := strconv.Atoi(string(bytes.TrimSpace(value)))
		if err != nil || v < 0 {
			return 0, fmt.Errorf("%w: %q", errBadLength, bytes.TrimSpace(value))
		}
		n = v
	}
}

// scan reads a part without Content-Length: up to the line break before the
// next boundary line, which it consumes too.
func (p *partReader) scan() ([]byte, error) {
	var buf []byte
	for {
		piece, err := p.br.ReadSlice('\n')
		buf = append(buf, piece...)
		if len(buf) > p.max {
			return nil, errFrameTooBig
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return nil, unexpected(err)
		}
		// After each line break: a boundary line next ends the part.
		for {
			peek, _ := p.br.Peek(len(p.delim))
			if !bytes.HasPrefix(peek, p.delim) && (p.alt == nil || !bytes.HasPrefix(peek, p.alt)) {
				break
			}
			line, err := p.br.ReadSlice('\n')
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) && !errors.Is(err, io.EOF) {
				return nil, err
			}
			// A closing boundary may be the stream's last bytes, without a line break.
			if ok, closing := p.delimiterLine(line); ok && !errors.Is(err, bufio.ErrBufferFull) {
				buf = bytes.TrimSuffix(buf, []byte("\n"))
				buf = bytes.TrimSuffix(buf, []byte("\r"))
				p.synced, p.ended = !closing, closing
				return buf, nil
			}
			// Data that merely starts like the boundary.
			buf = append(buf, line...)
			if len(buf) > p.max {
				return nil, errFrameTooBig
			}
			if errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			if err != nil {
				break // the line goes on: not at a line break any more
			}
		}
	}
}

// unexpected turns io.EOF in the middle of a stream into ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
