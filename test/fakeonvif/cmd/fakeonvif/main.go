// Command fakeonvif runs test/fakeonvif's camera, for tests that need it in
// another network namespace: it listens on -host and answers WS-Discovery
// multicast probes on every up interface with an IPv4 address there. It
// prints "fakeonvif ready" when it is.
//
// Usage: fakeonvif -host 192.168.77.1 [-user admin -password secret] [-name "Front Door"]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/porthole-dev/porthole/test/fakeonvif"
)

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	httpPort := flag.Int("http-port", 80, "ONVIF HTTP port")
	rtspPort := flag.Int("rtsp-port", 554, "RTSP port")
	user := flag.String("user", "", "ONVIF user (empty: no login needed)")
	password := flag.String("password", "", "ONVIF password (a test secret)")
	name := flag.String("name", "", "ONVIF scope name")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cam, err := fakeonvif.StartPorts(fakeonvif.Config{Name: *name, Username: *user, Password: *password}, *host, *httpPort, *rtspPort, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeonvif:", err)
		os.Exit(1)
	}
	defer cam.Close()
	ifaces, err := net.Interfaces()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeonvif:", err)
		os.Exit(1)
	}
	joined := 0
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		if err := cam.JoinMulticast(&ifi); err != nil {
			fmt.Fprintln(os.Stderr, "fakeonvif:", err)
			os.Exit(1)
		}
		fmt.Printf("fakeonvif: multicast on %s\n", ifi.Name)
		joined++
	}
	if joined == 0 {
		fmt.Fprintln(os.Stderr, "fakeonvif: no multicast interface")
		os.Exit(1)
	}
	fmt.Printf("fakeonvif ready: %s\n", cam.DeviceURL())
	<-ctx.Done()
}
