// Command floor is the smallest relay and agent that can be built on one of
// Porthole's tunnel libraries alone, for make bench to measure beside the real
// daemons: how much of Porthole's added round trip is the library's own.
//
// The relay accepts the agent's one tunnel connection, then TCP viewers, and
// opens one stream per viewer; the agent connects each stream to the target.
// Both copy with io.Copy and do nothing else: no limits, no logins, no
// counters. -transport quic is quic-go with its default configuration;
// -transport tcp is TLS over TCP with yamux, as Porthole's TCP fallback
// (without its write batching). make bench starts the two roles as separate
// processes with GOMAXPROCS=1, the setting internal/procs gives the daemons at
// this load:
//
//	floor -role relay -transport quic -listen 127.0.0.1:9000 -tunnel 127.0.0.1:9001
//	floor -role agent -transport quic -tunnel 127.0.0.1:9001 -target 127.0.0.1:7
//
// With -role compare it measures added round trips itself, interleaving
// variants round by round on fresh processes: "quic" and "tcp" are this
// pair, "porthole" and "porthole-tcp" the real daemons as make bench starts
// them (PORTHOLE_BENCH_BINS picks another build of those):
//
//	go run ./test/bench/cmd/floor -role compare -rounds 10 porthole,quic,porthole-tcp,tcp
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/quic-go/quic-go"

	"github.com/porthole-dev/porthole/test/bench"
	"github.com/porthole-dev/porthole/test/framework"
)

func main() {
	role := flag.String("role", "compare", "relay, agent, or compare")
	tr := flag.String("transport", "quic", "quic (quic-go), or tcp (TLS over TCP with yamux)")
	listen := flag.String("listen", "", "relay: the viewers' TCP address")
	tunnel := flag.String("tunnel", "", "the relay's tunnel address (UDP for quic, TCP for tcp)")
	target := flag.String("target", "", "agent: the TCP address each stream is connected to")
	rounds := flag.Int("rounds", 5, "compare: rounds")
	n := flag.Int("n", 10000, "compare: round trips per sample")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: floor -role relay|agent|compare [flags] [variants]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("floor: ")
	switch *role {
	case "relay":
		relay(*tr, *listen, *tunnel)
	case "agent":
		agent(*tr, *tunnel, *target)
	case "compare":
		compare(strings.Split(flag.Arg(0), ","), *rounds, *n)
	default:
		log.Fatalf("unknown -role %q", *role)
	}
}

func relay(tr, viewers, tunnelAddr string) {
	vl, err := net.Listen("tcp", viewers)
	if err != nil {
		log.Fatal(err)
	}
	var open func() (io.ReadWriteCloser, error)
	switch tr {
	case "tcp":
		l, err := tls.Listen("tcp", tunnelAddr, serverTLS())
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("floor relay ready")
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		s, err := yamux.Client(c, nil)
		if err != nil {
			log.Fatal(err)
		}
		open = func() (io.ReadWriteCloser, error) { return s.OpenStream() }
	case "quic":
		l, err := quic.ListenAddr(tunnelAddr, serverTLS(), nil)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("floor relay ready")
		qc, err := l.Accept(context.Background())
		if err != nil {
			log.Fatal(err)
		}
		open = func() (io.ReadWriteCloser, error) { return qc.OpenStreamSync(context.Background()) }
	default:
		log.Fatalf("unknown -transport %q", tr)
	}
	for {
		c, err := vl.Accept()
		if err != nil {
			log.Fatal(err)
		}
		s, err := open()
		if err != nil {
			log.Fatal(err)
		}
		go pipe(c, s)
	}
}

func agent(tr, tunnelAddr, target string) {
	var accept func() (io.ReadWriteCloser, error)
	switch tr {
	case "tcp":
		c, err := tls.Dial("tcp", tunnelAddr, clientTLS)
		if err != nil {
			log.Fatal(err)
		}
		s, err := yamux.Server(c, nil)
		if err != nil {
			log.Fatal(err)
		}
		accept = func() (io.ReadWriteCloser, error) { return s.AcceptStream() }
	case "quic":
		qc, err := quic.DialAddr(context.Background(), tunnelAddr, clientTLS, nil)
		if err != nil {
			log.Fatal(err)
		}
		accept = func() (io.ReadWriteCloser, error) { return qc.AcceptStream(context.Background()) }
	default:
		log.Fatalf("unknown -transport %q", tr)
	}
	fmt.Println("floor agent ready")
	for {
		s, err := accept()
		if err != nil {
			log.Fatal(err) // the relay is gone
		}
		c, err := net.Dial("tcp", target)
		if err != nil {
			log.Fatal(err)
		}
		go pipe(c, s)
	}
}

// pipe copies both ways until either direction ends.
func pipe(a, b io.ReadWriteCloser) {
	done := make(chan struct{}, 2)
	go func() { io.Copy(a, b); done <- struct{}{} }()
	go func() { io.Copy(b, a); done <- struct{}{} }()
	<-done
	a.Close()
	b.Close()
}

// serverTLS is a throwaway self-signed certificate: the agent does not verify
// it, as nothing here is a security boundary.
func serverTLS() *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: []string{"floor"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"floor"}}
}

var clientTLS = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"floor"}}

// compare measures each variant once per round on fresh processes and a
// fresh echo backend, and prints every added p50 and each variant's median.
func compare(variants []string, rounds, n int) {
	if len(variants) == 0 || variants[0] == "" {
		log.Fatal("compare: name the variants, e.g. porthole,quic")
	}
	ctx := context.Background()
	bins, err := bench.BuildBins()
	if err != nil {
		log.Fatal(err)
	}
	defer framework.Default.Remove()
	added := map[string][]float64{}
	for r := range rounds {
		for _, v := range variants {
			a, err := bench.AddedRTT(ctx, bins, v, n)
			if err != nil {
				log.Fatal(err)
			}
			added[v] = append(added[v], a)
			fmt.Printf("round %d %-13s added p50 %.0f µs\n", r+1, v, a)
		}
	}
	for _, v := range variants {
		xs := added[v]
		sort.Float64s(xs)
		fmt.Printf("%-13s median of %d: %.0f µs (%.0f .. %.0f)\n", v, len(xs), xs[len(xs)/2], xs[0], xs[len(xs)-1])
	}
}
