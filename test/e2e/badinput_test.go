package e2e

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// TestAuthRefused: a wrong (strong) token and an unknown agent name are each refused
// with one line in the relay's log and "authentication failed" in the agent's; their
// ports stay closed; the good agent keeps working.
func TestAuthRefused(t *testing.T) {
	t.Parallel()
	echo := echoBackend(t)
	ps, lo, hi := servicePorts(t, 3)
	tok := strongToken()
	e := newEnv(t, agentEntry{Name: "home", Token: tok, Lo: lo, Hi: hi})
	relay := e.startRelay()
	good := e.startAgent("good-agent", e.agentConfig("good.yaml", "home", tok, service{Name: "cam", Target: echo.Addr(), Port: ps[0]}))
	good.WaitLog("tunnel up", 10*time.Second)
	waitEcho(t, ps[0], 10*time.Second)

	wrong := e.startAgent("wrong-token-agent", e.agentConfig("wrong.yaml", "home", strongToken(), service{Name: "cam2", Target: echo.Addr(), Port: ps[1]}))
	unknown := e.startAgent("unknown-agent", e.agentConfig("unknown.yaml", "cabin", tok, service{Name: "cam3", Target: echo.Addr(), Port: ps[2]}))

	relay.WaitLog(`agent \"home\" rejected the relay's proof: the tokens in relay.yaml and agent.yaml differ`, 10*time.Second)
	relay.WaitLog(`unknown agent name \"cabin\"`, 10*time.Second)
	wrong.WaitLog("authentication failed", 10*time.Second)
	unknown.WaitLog("authentication failed", 10*time.Second)
	if n := len(relay.Lines("agent refused", `home`)); n != 1 {
		t.Errorf("%d relay lines refusing the wrong token, want 1", n)
	}
	if n := len(relay.Lines("agent refused", `cabin`)); n != 1 {
		t.Errorf("%d relay lines refusing the unknown agent, want 1", n)
	}
	if strings.Contains(relay.Log(), "new session replaces") {
		t.Error("a refused agent replaced the good one")
	}
	for _, p := range ps[1:] {
		if !portClosed(p) {
			t.Errorf("port %d of a refused agent is open", p)
		}
	}
	if !echoWorks(ps[0]) {
		t.Error("the good agent's service stopped working")
	}
	for _, p := range []*Process{relay, good, wrong, unknown} {
		if strings.Contains(p.Log(), tok) {
			t.Errorf("%s logged the token", p.name)
		}
	}
}

// TestCheckRefusesBadConfigs: -check names the key and line of a weak token, a
// duplicate port, and exits non-zero; good configs pass.
func TestCheckRefusesBadConfigs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	weak := writeFile(t, dir, "relay.yaml", "listen: 127.0.0.1:7443\nstate_dir: "+dir+"/s\nagents:\n  home:\n    token: password123\n    ports: 10000-10100\n")
	code, out := runCmd(t, bins.relay, "-check", "-config", weak)
	if code == 0 || !strings.Contains(out, "relay.yaml:5") || !strings.Contains(out, "agents.home.token") || !strings.Contains(out, "weak") {
		t.Errorf("relay -check with a weak token: exit %d, output %q", code, out)
	}
	tok := strongToken()
	agentYAML := "name: home\nstate_dir: " + dir + "/a\nrelay:\n  address: 127.0.0.1:7443\n  token: %s\ndirect:\n  enabled: false\nservices:\n" +
		"  - name: a\n    target: 127.0.0.1:1\n    port: 10001\n    allow: [any]\n" +
		"  - name: b\n    target: 127.0.0.1:2\n    port: %d\n    allow: [any]\n"
	dup := writeFile(t, dir, "dup.yaml", fmt.Sprintf(agentYAML, tok, 10001))
	code, out = runCmd(t, bins.agent, "-check", "-config", dup)
	if code == 0 || !strings.Contains(out, "dup.yaml:15") || !strings.Contains(out, "services[1].port") || !strings.Contains(out, "10001") {
		t.Errorf("agent -check with a duplicate port: exit %d, output %q", code, out)
	}
	weakAgent := writeFile(t, dir, "weak-agent.yaml", fmt.Sprintf(agentYAML, "hunter2hunter2", 10002))
	code, out = runCmd(t, bins.agent, "-check", "-config", weakAgent)
	if code == 0 || !strings.Contains(out, "weak-agent.yaml:5") || !strings.Contains(out, "relay.token") {
		t.Errorf("agent -check with a weak token: exit %d, output %q", code, out)
	}
	ok := writeFile(t, dir, "ok.yaml", fmt.Sprintf(agentYAML, tok, 10002))
	if code, out := runCmd(t, bins.agent, "-check", "-config", ok); code != 0 {
		t.Errorf("agent -check of a good config: exit %d, output %q", code, out)
	}
	for _, bin := range []string{bins.relay, bins.agent} {
		if code, out := runCmd(t, bin, "-version"); code != 0 || !strings.Contains(out, "porthole-") {
			t.Errorf("%s -version: exit %d, %q", bin, code, out)
		}
	}
	if code, out := runCmd(t, bins.relay, "token"); code != 0 || len(strings.TrimSpace(out)) < 22 {
		t.Errorf("porthole-relay token: exit %d, %q", code, out)
	}
}

// TestPortOutsideRange: the relay refuses a service outside the agent's range with
// the reason in both logs; the agent's in-range service works.
func TestPortOutsideRange(t *testing.T) {
	t.Parallel()
	echo := echoBackend(t)
	in := freePort(t, "tcp")
	out := freePort(t, "tcp")
	tok := strongToken()
	e := newEnv(t, agentEntry{Name: "home", Token: tok, Lo: in, Hi: in})
	relay := e.startRelay()
	agent := e.startAgent("agent", e.agentConfig("agent.yaml", "home", tok,
		service{Name: "inside", Target: echo.Addr(), Port: in},
		service{Name: "outside", Target: echo.Addr(), Port: out},
	))
	reason := fmt.Sprintf("port %d is outside this agent's range %d-%d", out, in, in)
	relay.WaitLog(reason, 10*time.Second)
	agent.WaitLog("service refused by the relay", 10*time.Second)
	if l := agent.Lines("service refused by the relay"); len(l) != 1 || !strings.Contains(l[0], "outside") || !strings.Contains(l[0], reason) {
		t.Errorf("agent refusal lines: %q", l)
	}
	if l := relay.Lines("service refused"); len(l) != 1 || !strings.Contains(l[0], "service=outside") {
		t.Errorf("relay refusal lines: %q", l)
	}
	waitEcho(t, in, 10*time.Second)
	if !portClosed(out) {
		t.Error("the out-of-range port is open")
	}
}

// TestLANTargetRefusesOrHangs: a viewer of a service whose camera refuses is closed,
// with one agent log line naming the target; a viewer of a hanging camera gets no
// bytes; other services keep working throughout.
func TestLANTargetRefusesOrHangs(t *testing.T) {
	t.Parallel()
	echo := echoBackend(t)
	hang := hangBackend(t)
	refused := refusingAddr(t)
	_, relay, agent, ps := setupOne(t, refused, hang.Addr(), echo.Addr())
	waitEcho(t, ps[2], 10*time.Second)

	// The relay resets a viewer whose stream the agent refused; on loopback the
	// reset can beat the dialer's own check that its connect completed.
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(ps[0]), 3*time.Second); err == nil {
		defer c.Close()
		c.Write([]byte("DESCRIBE rtsp://cam/ RTSP/1.0\r\n\r\n"))
		if nothing, err := readsNothing(c, 8*time.Second); !nothing {
			t.Fatalf("viewer of a refusing camera: not closed without bytes (err %v)", err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("viewer of a refusing camera: dial: %v", err)
	}
	agent.WaitLog("camera unreachable", 5*time.Second)
	if l := agent.Lines("camera unreachable"); len(l) != 1 || !strings.Contains(l[0], "target="+refused) || !strings.Contains(l[0], "refused") {
		t.Errorf("agent lines for the refusing camera: %q", l)
	}

	h := dialViewer(t, ps[1])
	h.Write([]byte("hello?"))
	h.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := h.Read(make([]byte, 10)); n != 0 || !isTimeout(err) {
		t.Fatalf("viewer of a hanging camera: read %d bytes, err %v; want a timeout", n, err)
	}
	if !echoWorks(ps[2]) {
		t.Error("a working service stopped while another camera hangs")
	}
	h.Close()
	if strings.Contains(relay.Log(), "level=ERROR") || strings.Contains(agent.Log(), "level=ERROR") {
		t.Error("errors logged")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestGarbage: random datagrams (some 1200+ bytes, some shaped like QUIC long
// headers) on the relay's UDP port, QUIC clients that send malformed and oversized
// frames, and viewers that connect and reset: the relay logs the bad frames, keeps
// serving the agent, and its file descriptors return to baseline.
func TestGarbage(t *testing.T) {
	t.Parallel()
	echo := echoBackend(t)
	ps, lo, hi := servicePorts(t, 1)
	tok, cabinTok := strongToken(), strongToken()
	e := newEnv(t, agentEntry{Name: "home", Token: tok, Lo: lo, Hi: hi}, agentEntry{Name: "cabin", Token: cabinTok, Lo: 1, Hi: 1})
	relay := e.startRelay()
	agent := e.startAgent("agent", e.agentConfig("agent.yaml", "home", tok, service{Name: "cam", Target: echo.Addr(), Port: ps[0]}))
	waitEcho(t, ps[0], 10*time.Second)
	baseFDs := relay.FDs()

	// UDP garbage.
	uc, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", e.udp))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	for i := range 300 {
		size := 1 + i*5%1500
		if i%3 == 0 {
			size = 1200 + i%300
		}
		b := make([]byte, size)
		rand.Read(b)
		if i%2 == 0 {
			b[0] |= 0xc0 // long header, as in a QUIC Initial
			binary.BigEndian.PutUint32(b[1:5], 1)
		}
		uc.Write(b)
	}

	// Malformed control frames from QUIC clients: garbage instead of Hello,
	// an oversized frame, and an oversized frame after authenticating as cabin.
	badHello := func(payload []byte) {
		qc := dialQUIC(t, e.udp)
		st, err := qc.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		st.Write(payload)
		st.CloseWrite()
		<-qc.Context().Done()
	}
	badHello(append(binary.BigEndian.AppendUint32(nil, 5), byte(proto.TypeHello), '}', '{', '"', 0xff)) // malformed body
	badHello(binary.BigEndian.AppendUint32(nil, 1<<30))
	relay.WaitLogCount("agent refused", 2, 10*time.Second)
	if l := relay.Lines("agent refused", "reading hello"); len(l) != 2 || !strings.Contains(l[1], "frame too large") {
		t.Errorf("relay lines for a malformed and an oversized hello: %q", l)
	}

	qc := dialQUIC(t, e.udp)
	ctrl := authenticate(t, qc, "cabin", cabinTok)
	ctrl.Write(binary.BigEndian.AppendUint32(nil, proto.MaxFrame+1))
	relay.WaitLog("bad control message; closing the session", 10*time.Second)
	<-qc.Context().Done()

	// Viewers that reset at once or send junk and leave.
	for i := range 50 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ps[0]))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			c.(*net.TCPConn).SetLinger(0)
		} else {
			c.Write([]byte("\x00\xff junk"))
		}
		c.Close()
	}

	if !echoWorks(ps[0]) {
		t.Fatal("service stopped working after garbage")
	}
	if strings.Contains(agent.Log(), "tunnel down") {
		t.Error("the agent's tunnel went down during the garbage")
	}
	eventually(t, 10*time.Second, func() bool { return relay.FDs() <= baseFDs+2 }, "relay fds %d, baseline %d", relay.FDs(), baseFDs)
}

// dialQUIC connects to the relay over QUIC, as the agent does.
func dialQUIC(t *testing.T, port int) transport.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := tunnel.DialQUIC(nil)(ctx, fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("quic dial: %v", err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc
}

// authenticate runs the agent's side of the handshake and returns the control stream.
func authenticate(t *testing.T, qc transport.Conn, name, token string) transport.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctrl, _, err := tunnel.Authenticate(ctx, qc, name, token, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	return ctrl
}
