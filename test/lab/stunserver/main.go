// Command stunserver is the namespace lab's STUN responder: a minimal RFC 5389
// Binding responder that answers every Binding Request from the one address it
// listens on, with MAPPED-ADDRESS and XOR-MAPPED-ADDRESS of the sender.
//
// It ignores CHANGE-REQUEST on purpose. miniupnpd 2.3.1 needs 4 of 4 answers
// to its change-ip/change-port probes, all showing the address it sent from,
// and does not check where they come from; with that it accepts the
// documentation-range WAN address the lab uses (see test/lab/README.md).
//
// Usage: stunserver -listen 203.0.113.1:3478
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:3478", "UDP address to answer on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen); err != nil {
		fmt.Fprintln(os.Stderr, "stunserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen string) error {
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	conn := pc.(*net.UDPConn)
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	fmt.Printf("stunserver listening on %s\n", conn.LocalAddr())
	buf := make([]byte, maxRequestBytes+1)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read: %w", err)
		}
		resp, err := respond(buf[:n], from)
		if err != nil {
			fmt.Printf("ignored %d bytes from %s: %v\n", n, from, err)
			continue
		}
		if _, err := conn.WriteToUDPAddrPort(resp, from); err != nil {
			fmt.Printf("reply to %s: %v\n", from, err)
			continue
		}
		fmt.Printf("binding %s\n", from)
	}
}
