package quictransport

import (
	"errors"
	"io"

	"github.com/quic-go/quic-go"

	"github.com/porthole-dev/porthole/tunnel/transport"
)

// mappedError puts the seam's error in front of quic-go's: errors.Is/As find
// both (transport.ErrIdleTimeout and *quic.IdleTimeoutError, net.ErrClosed...).
type mappedError struct {
	seam error // what the tunnel branches on
	orig error // quic-go's error, kept for logs and errors.As
}

func (e *mappedError) Error() string   { return e.seam.Error() }
func (e *mappedError) Unwrap() []error { return []error{e.seam, e.orig} }

// mapErr translates quic-go's connection errors to the seam's.
func mapErr(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var seam error
	var (
		appErr   *quic.ApplicationError
		idleErr  *quic.IdleTimeoutError
		resetErr *quic.StatelessResetError
		strErr   *quic.StreamError
		dgErr    *quic.DatagramTooLargeError
	)
	switch {
	case errors.As(err, &appErr):
		seam = &transport.CloseError{Code: uint64(appErr.ErrorCode), Msg: appErr.ErrorMessage, Remote: appErr.Remote}
	case errors.As(err, &idleErr):
		seam = transport.ErrIdleTimeout
	case errors.As(err, &resetErr):
		seam = transport.ErrPeerRestarted
	case errors.As(err, &strErr):
		seam = &transport.StreamError{Code: uint64(strErr.ErrorCode), Remote: strErr.Remote}
	case errors.As(err, &dgErr):
		seam = transport.ErrDatagramTooLarge
	default:
		return err
	}
	return &mappedError{seam: seam, orig: err}
}

// mapStreamErr is mapErr for the hot Read/Write path: io.EOF and deadline
// errors (the common ones) pass through without allocating.
func mapStreamErr(err error) error {
	if err == io.EOF {
		return err
	}
	return mapErr(err)
}
