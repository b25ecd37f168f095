package discover

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// maxProbeHeader bounds the status line and headers read from a probed port.
const maxProbeHeader = 16 << 10

// PortProbe is what one port of a camera answered.
type PortProbe struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"` // rtsp or http
	// Open is true when the port answered in its protocol.
	Open bool `json:"open"`
	// Status is the answer's status line ("RTSP/1.0 200 OK").
	Status string `json:"status,omitempty"`
	// Server is the Server header, which often names the camera's make.
	Server string `json:"server,omitempty"`
	// Realm is the realm of a WWW-Authenticate challenge, if any.
	Realm string `json:"realm,omitempty"`
	// Auth is the challenge's scheme (Basic, Digest), if any.
	Auth  string `json:"auth,omitempty"`
	Error string `json:"error,omitempty"`
}

// probeRTSP sends RTSP OPTIONS to host:port and reads the answer's headers.
func probeRTSP(ctx context.Context, dial dialFunc, host netip.Addr, port int, timeout time.Duration) PortProbe {
	return probePort(ctx, dial, host, port, timeout, "rtsp", "OPTIONS rtsp://%s/ RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: porthole-discover\r\n\r\n")
}

// probeHTTP sends GET / to host:port and reads the answer's headers.
func probeHTTP(ctx context.Context, dial dialFunc, host netip.Addr, port int, timeout time.Duration) PortProbe {
	return probePort(ctx, dial, host, port, timeout, "http", "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: porthole-discover\r\nConnection: close\r\n\r\n")
}

// probePort sends request (a format with the address in %s) to host:port
// and reads the status line and headers of the answer, which must start with
// the protocol's name.
func probePort(ctx context.Context, dial dialFunc, host netip.Addr, port int, timeout time.Duration, proto, request string) PortProbe {
	pp := PortProbe{Port: port, Protocol: proto}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := netip.AddrPortFrom(host, uint16(port)).String()
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		pp.Error = shortNetErr(err)
		return pp
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	fmt.Fprintf(c, request, addr)
	status, hdr, err := readHeader(c)
	if err != nil {
		pp.Error = shortNetErr(err)
		return pp
	}
	if name := strings.ToUpper(proto); !strings.HasPrefix(status, name+"/") {
		pp.Error = fmt.Sprintf("not %s (answered %q)", name, clipN(status, 60))
		return pp
	}
	pp.Open, pp.Status = true, status
	fillHeaders(&pp, hdr)
	return pp
}

// readHeader reads a status line and MIME headers, at most maxProbeHeader
// bytes in all.
func readHeader(r io.Reader) (string, textproto.MIMEHeader, error) {
	tr := textproto.NewReader(bufio.NewReader(io.LimitReader(r, maxProbeHeader)))
	status, err := tr.ReadLine()
	if err != nil {
		return "", nil, err
	}
	hdr, err := tr.ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return clip(status), nil, fmt.Errorf("bad header: %w", err)
	}
	return clip(status), hdr, nil
}

func fillHeaders(pp *PortProbe, hdr textproto.MIMEHeader) {
	pp.Server = clipN(hdr.Get("Server"), 200)
	if ch := hdr.Get("WWW-Authenticate"); ch != "" {
		scheme, _, _ := strings.Cut(strings.TrimSpace(ch), " ")
		pp.Auth = clipN(scheme, 20)
		pp.Realm = clipN(authParam(ch, "realm"), 200)
	}
}

// authParam returns a parameter of a WWW-Authenticate challenge.
func authParam(ch, name string) string {
	// not strings.ToLower(ch): it can change the length of non-ASCII text
	i := -1
	for j := 0; j+len(name)+1 <= len(ch); j++ {
		if strings.EqualFold(ch[j:j+len(name)+1], name+"=") {
			i = j
			break
		}
	}
	if i < 0 {
		return ""
	}
	v := ch[i+len(name)+1:]
	if strings.HasPrefix(v, `"`) {
		if s, err := strconv.QuotedPrefix(v); err == nil {
			if u, err := strconv.Unquote(s); err == nil {
				return u
			}
		}
		v = strings.TrimPrefix(v, `"`)
		if j := strings.IndexByte(v, '"'); j >= 0 {
			return v[:j]
		}
		return v
	}
	if j := strings.IndexAny(v, ", "); j >= 0 {
		return v[:j]
	}
	return v
}

// shortNetErr turns a dial or read error into a few words.
func shortNetErr(err error) string {
	switch {
	case isTimeout(err):
		return "no answer (timeout)"
	case errors.Is(err, io.EOF):
		return "closed without answering"
	case strings.Contains(err.Error(), "connection refused"):
		return "closed (connection refused)"
	}
	return clipN(err.Error(), 200)
}

func clipN(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
