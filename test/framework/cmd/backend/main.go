// Command backend is the framework's mock LAN service as a program of its own,
// for tests that want the service in a separate process (the benchmarks' echo
// for round-trip times) or in another network namespace:
//
//	backend -listen 127.0.0.1:9000 -mode echo|readall|hang|greeter|source [-banner TEXT] [-size BYTES]
//
// It prints "backend listening on ADDR" once it accepts connections and stops
// on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/porthole-dev/porthole/test/framework"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TCP address to listen on")
	mode := flag.String("mode", "echo", "echo, readall, hang, greeter or source")
	banner := flag.String("banner", "hello", "greeter: first part of the line")
	size := flag.Int64("size", 1<<30, "source: bytes sent to each connection")
	flag.Parse()
	handlers := map[string]framework.Handler{
		"echo": framework.Echo, "readall": framework.ReadAll, "hang": framework.Hang,
		"greeter": framework.Greeter(*banner), "source": framework.Source(*size),
	}
	h, ok := handlers[*mode]
	if !ok {
		fmt.Fprintf(os.Stderr, "backend: unknown mode %q\n", *mode)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := framework.Serve(*listen, h)
	if err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
	fmt.Printf("backend listening on %s\n", b.Addr())
	<-ctx.Done()
	b.Close()
}
