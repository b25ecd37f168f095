package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

// RedirectRTSPS is a Config.Plain for rtsp services: it reads one RTSP
// request head (at most 8 KiB, within the deadline the gateway set) and
// answers 301 with Location: rtsps://<host><path> on the same port, its
// reason phrase saying so (players show it: "method OPTIONS failed: 301 This
// port speaks RTSPS ..."). A request whose URL has no usable host gets 400;
// bytes that are not RTSP get nothing. The gateway closes the connection
// afterwards.
func RedirectRTSPS(c net.Conn, peeked []byte) {
	tp := textproto.NewReader(bufio.NewReader(io.LimitReader(io.MultiReader(bytes.NewReader(peeked), c), maxRedirectHead)))
	line, err := tp.ReadLine()
	if err != nil {
		return
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[2] != "RTSP/1.0" {
		return
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return
	}
	cseq := ""
	if n, err := strconv.ParseUint(hdr.Get("CSeq"), 10, 32); err == nil {
		cseq = "CSeq: " + strconv.FormatUint(n, 10) + "\r\n"
	}
	u, err := url.Parse(f[1])
	if err != nil || !strings.EqualFold(u.Scheme, "rtsp") || !validHost(u.Host) || u.User != nil {
		fmt.Fprintf(c, "RTSP/1.0 400 This port speaks RTSPS: open rtsps://<host>:<port>/<service>\r\n%sContent-Length: 0\r\n\r\n", cseq)
		return
	}
	loc := "rtsps://" + u.Host + u.EscapedPath()
	if u.RawQuery != "" {
		loc += "?" + u.RawQuery
	}
	fmt.Fprintf(c, "RTSP/1.0 301 This port speaks RTSPS: open %s\r\n%sLocation: %s\r\nContent-Length: 0\r\n\r\n", loc, cseq, loc)
}
