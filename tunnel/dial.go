package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// dial connects to the relay with the configured transport. In auto mode it dials
// QUIC and, when QUIC has not connected within QUICWait (or failed sooner), TCP
// too; the first to connect wins. why says in words why that transport.
func (c *Client) dial(ctx context.Context) (transport.Conn, string, error) {
	switch {
	case c.cfg.Transport == TransportQUIC:
		conn, err := c.cfg.DialQUIC(ctx, c.cfg.Address)
		if err != nil {
			return nil, "", c.unreachable("UDP", err)
		}
		return conn, "relay.transport: quic", nil
	case c.cfg.Transport == TransportTCP:
		conn, err := c.cfg.DialTCP(ctx, c.cfg.Address)
		if err != nil {
			return nil, "", c.unreachable("TCP", err)
		}
		return conn, "relay.transport: tcp", nil
	case c.cfg.DialTCP == nil:
		conn, err := c.cfg.DialQUIC(ctx, c.cfg.Address)
		if err != nil {
			return nil, "", fmt.Errorf("dial relay %s (quic): %w", c.cfg.Address, err)
		}
		return conn, "QUIC connects (no TCP fallback configured)", nil
	case c.cfg.DialQUIC == nil:
		conn, err := c.cfg.DialTCP(ctx, c.cfg.Address)
		if err != nil {
			return nil, "", fmt.Errorf("dial relay %s (tcp): %w", c.cfg.Address, err)
		}
		return conn, "no QUIC dialer configured", nil
	}

	type result struct {
		conn transport.Conn
		err  error
		tcp  bool
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, 2)
	pending := 1
	go func() {
		conn, err := c.cfg.DialQUIC(dctx, c.cfg.Address)
		results <- result{conn, err, false}
	}()
	var tcpWhy string
	startTCP := func(why string) {
		tcpWhy = why
		pending++
		go func() {
			conn, err := c.cfg.DialTCP(dctx, c.cfg.Address)
			results <- result{conn, err, true}
		}()
	}
	// drain waits for the other dial, closing what it connected: the dialers end
	// with dctx, so no goroutine outlives this call.
	drain := func() {
		cancel()
		for ; pending > 0; pending-- {
			if r := <-results; r.err == nil {
				r.conn.CloseWithError(uint64(proto.CloseNormal), "not needed")
			}
		}
	}
	timer := time.NewTimer(c.cfg.QUICWait)
	defer timer.Stop()
	var quicErr, tcpErr error
	for pending > 0 {
		select {
		case <-timer.C:
			if tcpWhy == "" {
				if !c.quicWaitSaid { // once while the relay is unreachable, not at every attempt
					c.quicWaitSaid = true
					c.log.Info("QUIC has not connected yet; trying TCP too", "after", c.cfg.QUICWait)
				}
				startTCP(fmt.Sprintf("QUIC did not connect within %s (UDP blocked?)", c.cfg.QUICWait))
			}
		case r := <-results:
			pending--
			if r.err == nil {
				drain()
				if r.tcp {
					if !c.udpHinted.Swap(true) {
						_, port, _ := net.SplitHostPort(c.cfg.Address)
						c.log.Warn(fmt.Sprintf("UDP to the relay seems blocked: TCP connects but QUIC does not, so the tunnel runs over TCP (video stalls more when packets are lost); open UDP %s in the relay's firewall and check nothing on the way blocks UDP", port),
							"why", tcpWhy)
					}
					return r.conn, tcpWhy, nil
				}
				return r.conn, "QUIC connects", nil
			}
			if r.tcp {
				tcpErr = r.err
			} else {
				quicErr = r.err
				if tcpWhy == "" && ctx.Err() == nil {
					startTCP(fmt.Sprintf("QUIC failed: %v", r.err))
				}
			}
		case <-ctx.Done():
			drain()
			return nil, "", ctx.Err()
		}
	}
	var errs []error
	if quicErr != nil {
		errs = append(errs, fmt.Errorf("quic: %w", quicErr))
	}
	if tcpErr != nil {
		errs = append(errs, fmt.Errorf("tcp: %w", tcpErr))
	}
	return nil, "", c.unreachable("UDP and TCP", errors.Join(errs...))
}

// ErrUnreachable means no transport connected to the relay's address.
var ErrUnreachable = errors.New("relay unreachable")

// unreachable says in plain words what to check when the relay can't be
// reached over over ("UDP", "TCP" or "UDP and TCP"), with the dialers' err.
func (c *Client) unreachable(over string, err error) error {
	_, port, perr := net.SplitHostPort(c.cfg.Address)
	if perr != nil {
		port = c.cfg.Address
	}
	return fmt.Errorf("%w (%s): is porthole-relay running at %s and its firewall open for %s %s? %w",
		ErrUnreachable, over, c.cfg.Address, over, port, err)
}
