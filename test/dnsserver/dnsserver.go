// Package dnsserver starts a real authoritative DNS server (Knot DNS, knotd)
// on loopback for tests: one zone, a TSIG key allowed to send RFC 2136
// updates, and a Query helper to check what it serves. Tests skip loudly
// when knotd is not installed (apt-get install knot).
package dnsserver

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Server is a running knotd.
type Server struct {
	// Addr is host:port (127.0.0.1) for UDP and TCP.
	Addr string
	// Zone is the served zone, without trailing dot.
	Zone string
	// KeyName, KeyAlg and Key (base64) are the TSIG key allowed to update.
	KeyName, KeyAlg, Key string

	cmd  *exec.Cmd
	done chan struct{}
	logs *logBuffer
}

// Options adjusts StartWith.
type Options struct {
	// Records are extra zone lines in zone-file syntax, relative to the
	// zone (for example "other 300 IN A 192.0.2.99").
	Records []string
}

// Start runs knotd serving zone (for example "example.com") on a free
// loopback port and stops it when the test ends. The zone has an SOA, an
// NS, "ns1" and an unrelated "other" A record (192.0.2.99) that updates
// must leave alone.
func Start(t testing.TB, zone string) *Server {
	t.Helper()
	return StartWith(t, zone, Options{Records: []string{"other 300 IN A 192.0.2.99"}})
}

// StartWith is Start with custom extra records.
func StartWith(t testing.TB, zone string, o Options) *Server {
	t.Helper()
	knotd, err := exec.LookPath("knotd")
	if err != nil {
		for _, p := range []string{"/usr/sbin/knotd", "/sbin/knotd"} {
			if _, serr := os.Stat(p); serr == nil {
				knotd, err = p, nil
				break
			}
		}
	}
	if err != nil {
		t.Skip("SKIPPED: knotd (Knot DNS) is not installed; `apt-get install knot` to run this real-DNS-server test")
	}
	zone = strings.TrimSuffix(strings.ToLower(zone), ".")
	keyBytes := make([]byte, 32)
	rand.Read(keyBytes)
	s := &Server{
		Zone:    zone,
		KeyName: "porthole-test.",
		KeyAlg:  "hmac-sha256",
		Key:     base64.StdEncoding.EncodeToString(keyBytes),
	}
	// A port picked free can be taken before knotd binds it; try a few.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		dir, err := os.MkdirTemp("", "knotd")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
		if lastErr = s.start(knotd, dir, port, o); lastErr == nil {
			t.Cleanup(s.stop)
			return s
		}
	}
	t.Fatalf("dnsserver: knotd did not start: %v", lastErr)
	return nil
}

func (s *Server) start(knotd, dir string, port int, o Options) error {
	conf := fmt.Sprintf(`server:
    rundir: %[1]q
    pidfile: %[2]q
    listen: 127.0.0.1@%[3]d
log:
  - target: stderr
    any: info
database:
    storage: %[4]q
key:
  - id: %[5]s
    algorithm: %[6]s
    secret: %[7]s
acl:
  - id: update
    key: %[5]s
    action: update
template:
  - id: default
    storage: %[1]q
    file: "%%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: %[8]s
    acl: update
`, dir, filepath.Join(dir, "knot.pid"), port, filepath.Join(dir, "db"), s.KeyName, s.KeyAlg, s.Key, s.Zone)
	zf := fmt.Sprintf("$ORIGIN %s.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.53\n", s.Zone)
	for _, r := range o.Records {
		zf += r + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "knot.conf"), []byte(conf), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, s.Zone+".zone"), []byte(zf), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(knotd, "-c", filepath.Join(dir, "knot.conf"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd, s.done, s.logs = cmd, make(chan struct{}), &logBuffer{}
	ready := make(chan struct{})
	go func() {
		// Reads knotd's log until it exits; signals once the zone is loaded
		// and the server is up.
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		loaded, started, signalled := false, false, false
		for sc.Scan() {
			line := sc.Text()
			s.logs.add(line)
			loaded = loaded || strings.Contains(line, "["+s.Zone+".] loaded")
			started = started || strings.Contains(line, "server started")
			if loaded && started && !signalled {
				signalled = true
				close(ready)
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
	}()
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	select {
	case <-ready:
	case <-s.done:
		return fmt.Errorf("knotd exited: %s", s.logs.String())
	case <-timer.C:
		s.stop()
		return fmt.Errorf("knotd not ready after 15s: %s", s.logs.String())
	}
	// Confirm it answers authoritatively.
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(s.Zone), dns.TypeSOA)
	c := &dns.Client{Timeout: 2 * time.Second}
	in, _, err := c.Exchange(m, s.Addr)
	if err != nil || in.Rcode != dns.RcodeSuccess || !in.Authoritative {
		s.stop()
		return fmt.Errorf("knotd does not answer SOA (err %v): %s", err, s.logs.String())
	}
	return nil
}

// stop ends knotd by its pid: SIGTERM, then SIGKILL after 5 s.
func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case <-s.done:
	case <-timer.C:
		s.cmd.Process.Kill()
		<-s.done
	}
}

// Logs returns what knotd logged so far, for failure messages.
func (s *Server) Logs() string { return s.logs.String() }

// Query asks the server for name (relative to the zone or absolute) and type.
func (s *Server) Query(name string, qtype uint16) ([]dns.RR, error) {
	fq := dns.Fqdn(name)
	if !strings.HasSuffix(strings.ToLower(fq), s.Zone+".") {
		fq = dns.Fqdn(name + "." + s.Zone)
	}
	m := new(dns.Msg)
	m.SetQuestion(fq, qtype)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := &dns.Client{Net: "tcp"}
	in, _, err := c.ExchangeContext(ctx, m, s.Addr)
	if err != nil {
		return nil, err
	}
	if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("query %s: %s", fq, dns.RcodeToString[in.Rcode])
	}
	var out []dns.RR
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype {
			out = append(out, rr)
		}
	}
	return out, nil
}

// Addrs returns the A (or AAAA) addresses served for name, sorted as served.
func (s *Server) Addrs(name string, qtype uint16) ([]netip.Addr, error) {
	rrs, err := s.Query(name, qtype)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, rr := range rrs {
		switch v := rr.(type) {
		case *dns.A:
			a, _ := netip.AddrFromSlice(v.A.To4())
			out = append(out, a)
		case *dns.AAAA:
			a, _ := netip.AddrFromSlice(v.AAAA.To16())
			out = append(out, a)
		}
	}
	return out, nil
}

// freePort finds a port free for both TCP and UDP on 127.0.0.1.
func freePort() (int, error) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port for TCP and UDP")
}

type logBuffer struct {
	mu    sync.Mutex // guards lines
	lines []string
}

func (b *logBuffer) add(l string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.lines) < 500 {
		b.lines = append(b.lines, l)
	}
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}
