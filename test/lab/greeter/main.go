// Command greeter is the namespace lab's stand-in for a LAN service: a TCP
// listener that writes one line, "<banner> peer=<remote ip:port>", to every
// connection and closes it. The peer part shows which address the service saw
// (a port mapping does not SNAT inbound traffic, a relay does).
//
// Usage: greeter -listen 192.168.77.10:8554 -banner "hello from lan"
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8554", "TCP address to listen on")
	banner := flag.String("banner", "hello", "first part of the line sent to each connection")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *banner); err != nil {
		fmt.Fprintln(os.Stderr, "greeter:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen, banner string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	defer context.AfterFunc(ctx, func() { ln.Close() })()
	fmt.Printf("greeter listening on %s\n", ln.Addr())
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		wg.Go(func() {
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := fmt.Fprintf(c, "%s peer=%s\n", banner, c.RemoteAddr()); err != nil {
				fmt.Printf("write to %s: %v\n", c.RemoteAddr(), err)
				return
			}
			fmt.Printf("greeted %s\n", c.RemoteAddr())
		})
	}
}
