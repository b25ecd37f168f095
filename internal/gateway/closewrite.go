package gateway

import "net"

// CloseWrite ends c's write side and that of every connection under it
// (NetConn): the TLS close_notify, then the tunnel stream's or socket's FIN
// (*tls.Conn's CloseWrite does not pass it down). Handlers call it before
// Close when nothing is being written, so that what they wrote arrives: a
// relayed viewer's tunnel stream is aborted by a bare Close (RESET_STREAM),
// and its last answer with it. Never call it beside a Write.
func CloseWrite(c net.Conn) {
	for c != nil {
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		c = u.NetConn()
	}
}
