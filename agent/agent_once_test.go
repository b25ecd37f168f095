package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/porthole-dev/porthole/test/dnsserver"
)

// Process-level tests: the real porthole-agent binary, -once, against a real
// authoritative DNS server (Knot) on loopback, with HTTP echo servers on
// 127.0.0.1 answering a documentation address.

// buildAgent builds porthole-agent into a temp dir.
func buildAgent(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "porthole-agent")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/porthole-agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build porthole-agent: %v\n%s", err, out)
	}
	return bin
}

// onceMinAgree: both echo servers must agree before anything is published.
const onceMinAgree = 2

type onceEnv struct {
	bin  string
	knot *dnsserver.Server
}

type runResult struct {
	code           int
	stdout, stderr string
}

// run runs the agent binary with args and the TSIG key in the environment.
func (e *onceEnv) run(t *testing.T, args ...string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = append(os.Environ(), "PORTHOLE_TEST_TSIG="+e.knot.Key)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := runResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run porthole-agent %v: %v", args, err)
	}
	t.Logf("porthole-agent %s: exit %d\nstdout:\n%sstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	if strings.Contains(r.stdout+r.stderr, e.knot.Key) {
		t.Errorf("the TSIG key appears in the agent's output")
	}
	return r
}

// writeConfig writes an agent.yaml for a plain DNS updater of host in zone,
// asking the echo URLs; the TSIG key comes from the environment.
func (e *onceEnv) writeConfig(t *testing.T, host, zone string, echoes ...string) (cfgPath, stateDir string) {
	t.Helper()
	dir := t.TempDir()
	stateDir = filepath.Join(dir, "state")
	// Its own admin address: the status step must not read whatever else
	// answers at the default 127.0.0.1:7480 on this machine.
	cfg := fmt.Sprintf(`name: home
state_dir: %s
admin: %s
publicip:
  sources: [https]
  https: [%s]
  min_agree: %d
  accept: [203.0.113.0/24]
  ipv6: false
ddns:
  hostname: %s
  ttl: 60s
  provider:
    type: rfc2136
    server: %s
    zone: %s
    key_name: %s
    key_alg: %s
    key: ${PORTHOLE_TEST_TSIG}
`, stateDir, freeLoopbackAddr(t), strings.Join(echoes, ", "), onceMinAgree, host, e.knot.Addr, zone, e.knot.KeyName, e.knot.KeyAlg)
	cfgPath = filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, stateDir
}

func (e *onceEnv) serial(t *testing.T) uint32 {
	t.Helper()
	rrs, err := e.knot.Query(e.knot.Zone, dns.TypeSOA)
	if err != nil || len(rrs) != 1 {
		t.Fatalf("SOA query: %v %v", rrs, err)
	}
	return rrs[0].(*dns.SOA).Serial
}

func (e *onceEnv) addrs(t *testing.T, host string) []netip.Addr {
	t.Helper()
	got, err := e.knot.Addrs(host, dns.TypeA)
	if err != nil {
		t.Fatalf("A query for %s: %v", host, err)
	}
	return got
}

// updates counts the DNS UPDATEs knot logged.
func (e *onceEnv) updates() int {
	return strings.Count(e.knot.Logs(), "DDNS, processing")
}

func TestOnceAgainstKnot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs knotd")
	}
	knot := dnsserver.Start(t, "example.com")
	e := &onceEnv{bin: buildAgent(t), knot: knot}
	want := netip.MustParseAddr("203.0.113.77")

	t.Run("publish, then unchanged", func(t *testing.T) {
		host := "home.example.com"
		cfg, _ := e.writeConfig(t, host, "example.com", echoServer(t, "203.0.113.77\n"), echoServer(t, "203.0.113.77"))
		serial0 := e.serial(t)

		r := e.run(t, "-config", cfg, "-once")
		if r.code != 0 {
			t.Fatalf("first -once: exit %d", r.code)
		}
		if !strings.Contains(r.stdout, "dns "+host+": updated") || !strings.Contains(r.stdout, "203.0.113.77") {
			t.Errorf("first -once does not say it published 203.0.113.77:\n%s", r.stdout)
		}
		if got := e.addrs(t, host); len(got) != 1 || got[0] != want {
			t.Fatalf("knot serves A %v for %s, want [%s]; knot log:\n%s", got, host, want, knot.Logs())
		}
		serial1 := e.serial(t)
		if serial1 == serial0 {
			t.Errorf("SOA serial did not move after the update (%d)", serial1)
		}
		if got := e.addrs(t, "other.example.com"); len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.99") {
			t.Errorf("unrelated record changed: other.example.com A %v", got)
		}

		updates := e.updates()
		if updates == 0 {
			t.Errorf("knot logged no UPDATE for the first run; the count below would prove nothing:\n%s", knot.Logs())
		}
		r = e.run(t, "-config", cfg, "-once")
		if r.code != 0 {
			t.Fatalf("second -once: exit %d", r.code)
		}
		if !strings.Contains(r.stdout, "dns "+host+": unchanged") {
			t.Errorf("second -once does not say unchanged:\n%s", r.stdout)
		}
		if s := e.serial(t); s != serial1 {
			t.Errorf("SOA serial %d -> %d: the second run wrote", serial1, s)
		}
		if n := e.updates() - updates; n != 0 {
			t.Errorf("%d UPDATEs reached knot in the second run", n)
		}

		// status reads what the last run left in state_dir.
		r = e.run(t, "-config", cfg, "status")
		if r.code != 0 {
			t.Fatalf("status: exit %d", r.code)
		}
		for _, s := range []string{"agent home", "public:   203.0.113.77", "path:     home", "dns:      A=203.0.113.77", "unchanged"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("status output lacks %q:\n%s", s, r.stdout)
			}
		}
	})

	t.Run("echo servers disagree", func(t *testing.T) {
		host := "split.example.com"
		cfg, _ := e.writeConfig(t, host, "example.com", echoServer(t, "203.0.113.77"), echoServer(t, "203.0.113.78"))
		serial0, updates := e.serial(t), e.updates()
		r := e.run(t, "-config", cfg, "-once")
		if r.code == 0 {
			t.Errorf("-once with disagreeing echo servers: exit 0")
		}
		if !strings.Contains(r.stderr, "nothing published") {
			t.Errorf("stderr does not say nothing was published:\n%s", r.stderr)
		}
		if got := e.addrs(t, host); len(got) != 0 {
			t.Errorf("knot serves A %v for %s, want none", got, host)
		}
		if s := e.serial(t); s != serial0 || e.updates() != updates {
			t.Errorf("knot was updated: serial %d -> %d", serial0, s)
		}
	})

	t.Run("private addresses", func(t *testing.T) {
		host := "lan.example.com"
		cfg, _ := e.writeConfig(t, host, "example.com", echoServer(t, "192.168.1.10"), echoServer(t, "192.168.1.10"))
		serial0 := e.serial(t)
		if r := e.run(t, "-config", cfg, "-once"); r.code == 0 {
			t.Errorf("-once with echo servers answering a private address: exit 0")
		}
		if got := e.addrs(t, host); len(got) != 0 {
			t.Errorf("knot serves A %v for %s, want none", got, host)
		}
		if s := e.serial(t); s != serial0 {
			t.Errorf("knot was updated: serial %d -> %d", serial0, s)
		}
	})

	// The address changes right after a write: the new one must wait for
	// min_interval, so DNS is wrong when -once ends. Before: exit 0.
	t.Run("write deferred by the minimum interval", func(t *testing.T) {
		host := "moved.example.com"
		cfg, _ := e.writeConfig(t, host, "example.com", echoServer(t, "203.0.113.77"), echoServer(t, "203.0.113.77"))
		if r := e.run(t, "-config", cfg, "-once"); r.code != 0 {
			t.Fatalf("first -once: exit %d", r.code)
		}
		b, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		i, j := strings.Index(string(b), "https: ["), strings.Index(string(b), "]\n  min_agree")
		moved := string(b[:i]) + "https: [" + echoServer(t, "203.0.113.78") + ", " + echoServer(t, "203.0.113.78") + string(b[j:])
		if err := os.WriteFile(cfg, []byte(moved), 0o600); err != nil {
			t.Fatal(err)
		}
		serial0 := e.serial(t)
		r := e.run(t, "-config", cfg, "-once")
		if r.code == 0 {
			t.Errorf("-once whose write was deferred (DNS still holds the old address): exit 0")
		}
		for _, want := range []string{"DNS not written yet", "203.0.113.78", "minimum interval", "run -once again"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
			}
		}
		if got := e.addrs(t, host); len(got) != 1 || got[0] != netip.MustParseAddr("203.0.113.77") {
			t.Errorf("knot serves A %v for %s, want the old [203.0.113.77] (the write waits)", got, host)
		}
		if s := e.serial(t); s != serial0 {
			t.Errorf("knot was updated: serial %d -> %d", serial0, s)
		}
	})

	t.Run("unknown zone", func(t *testing.T) {
		host := "home.nothere.test"
		cfg, _ := e.writeConfig(t, host, "nothere.test", echoServer(t, "203.0.113.77"), echoServer(t, "203.0.113.77"))
		serial0 := e.serial(t)
		r := e.run(t, "-config", cfg, "-once")
		if r.code == 0 {
			t.Errorf("-once against a zone the server doesn't serve: exit 0")
		}
		if !strings.Contains(r.stdout+r.stderr, "nothere.test") {
			t.Errorf("output does not name the zone:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
		}
		if s := e.serial(t); s != serial0 {
			t.Errorf("knot was updated: serial %d -> %d", serial0, s)
		}
	})
}

// freeLoopbackAddr is a 127.0.0.1 TCP address nothing listens on (at the time of asking).
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
