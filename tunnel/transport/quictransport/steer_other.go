//go:build !linux

package quictransport

import (
	"context"
	"errors"
	"net"
)

var errNoSteering = errors.New("quictransport: bare datagram steering needs Linux")

func listenSteered(string, string) (*net.UDPConn, error) { return nil, errNoSteering }

func listenSibling(context.Context, string, *net.UDPConn) (*net.UDPConn, error) {
	return nil, errNoSteering
}

// batchReader reads one packet per call where recvmmsg is not available.
type batchReader struct {
	uc  *net.UDPConn
	buf []byte
}

func newBatchReader(uc *net.UDPConn, _ int) *batchReader {
	return &batchReader{uc: uc, buf: make([]byte, 2048)}
}

func (r *batchReader) read(f func(b []byte, from net.Addr)) error {
	n, from, err := r.uc.ReadFrom(r.buf)
	if err != nil {
		return err
	}
	f(r.buf[:n], from)
	return nil
}
