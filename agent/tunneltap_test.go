package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway/access"
	"github.com/porthole-dev/porthole/tunnel"
	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
)

// tap records the bytes of every stream the relay opens to the agent: what
// the relay writes into the tunnel for viewers (read here) and what goes
// back (written here), inside QUIC's encryption.
type tap struct {
	mu        sync.Mutex
	in, out   bytes.Buffer
	streamsIn int
}

func (tp *tap) bytes() (in, out []byte) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return bytes.Clone(tp.in.Bytes()), bytes.Clone(tp.out.Bytes())
}

// dial is a tunnel.DialFunc: the real QUIC dial, its conn wrapped.
func (tp *tap) dial(ctx context.Context, addr string) (transport.Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	c, err := quictransport.Dial(ctx, nil, ua, tunnel.ClientTLS(), quictransport.DefaultClientConfig())
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, tp: tp}, nil
}

type tapConn struct {
	transport.Conn
	tp *tap
}

func (c *tapConn) AcceptStream(ctx context.Context) (transport.Stream, error) {
	s, err := c.Conn.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	c.tp.mu.Lock()
	c.tp.streamsIn++
	c.tp.mu.Unlock()
	return &tapStream{Stream: s, tp: c.tp}, nil
}

type tapStream struct {
	transport.Stream
	tp *tap
}

func (s *tapStream) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	s.tp.mu.Lock()
	s.tp.in.Write(b[:n])
	s.tp.mu.Unlock()
	return n, err
}

func (s *tapStream) Write(b []byte) (int, error) {
	n, err := s.Stream.Write(b)
	s.tp.mu.Lock()
	s.tp.out.Write(b[:n])
	s.tp.mu.Unlock()
	return n, err
}

// TestTunnelCarriesCiphertext (issue 8: "the relay sees only ciphertext"): a
// viewer logs in with a password and watches MJPEG of an http service
// through a real relay; the viewer streams inside the tunnel, tapped at the
// agent, hold neither the password, the Basic credentials, the viewer's
// name, a JPEG frame nor "multipart", in either direction: TLS ends at the
// agent, the relay only ever had ciphertext to write.
func TestTunnelCarriesCiphertext(t *testing.T) {
	const pass, camPass = "tap-viewer-pass-4Rw", "tap-camera-pass-8Lq"
	hash, err := access.HashPassword(pass)
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rtspLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cam := camsim.New(camsim.Config{Auth: "digest", Username: "admin", Password: camPass, FPS: 20, Width: 160, Height: 120})
	ctx, cancel := context.WithCancel(context.Background())
	camDone := make(chan struct{})
	go func() { cam.Run(ctx, httpLn, rtspLn); close(camDone) }()
	t.Cleanup(func() { cancel(); <-camDone; cam.Close() })

	token := config.NewToken()
	port := freePort(t)
	rs := startTestRelay(t, token, config.PortRange{Lo: port, Hi: port}, nil)
	tp := &tap{}
	ac := &config.Agent{
		Relay:   &config.AgentRelay{Address: rs.Addr().String(), Token: token},
		Viewers: map[string]config.Viewer{"alice": {PasswordHash: hash}},
		Services: []config.Service{{Name: "cam", Kind: config.KindHTTP, Target: httpLn.Addr().String(), Port: port,
			AllowAny: true, TLS: true, CameraLogin: &config.CameraLogin{Username: "admin", Password: camPass}}},
	}
	startTestAgent(t, Config{Agent: ac, DialRelayQUIC: tp.dial})

	client := selfSignedClient(t, ac.StateDir)
	req, _ := http.NewRequest(http.MethodGet, "https://127.0.0.1:"+strconv.Itoa(int(port))+"/stream.mjpg", nil)
	req.SetBasicAuth("alice", pass)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var clear []byte
	buf := make([]byte, 16<<10)
	soi := []byte{0xFF, 0xD8, 0xFF}
	for resp.StatusCode == http.StatusOK && bytes.Count(clear, soi) < 3 && len(clear) < 4<<20 {
		n, err := resp.Body.Read(buf)
		clear = append(clear, buf[:n]...)
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	i := bytes.Index(clear, soi)
	if resp.StatusCode != http.StatusOK || i < 0 || len(clear) < i+16 {
		t.Fatalf("viewer got %s and %d bytes without a JPEG frame", resp.Status, len(clear))
	}
	// 16 bytes of a frame: FF D8 FF alone turns up by chance in ciphertext.
	frame := clear[i : i+16]

	in, out := tp.bytes()
	if len(in) == 0 || len(out) < len(clear) {
		t.Fatalf("the tap saw %d bytes from the relay, %d to it; the viewer got %d", len(in), len(out), len(clear))
	}
	auth := base64.StdEncoding.EncodeToString([]byte("alice:" + pass))
	for dir, b := range map[string][]byte{"relay->agent": in, "agent->relay": out} {
		for what, s := range map[string][]byte{
			"the password": []byte(pass), "the Basic credentials": []byte(auth), "an Authorization header": []byte("Authorization"),
			"the viewer's name": []byte("alice"), "a JPEG frame": frame, "multipart": []byte("multipart"),
			"the camera's password": []byte(camPass),
		} {
			if bytes.Contains(b, s) {
				t.Errorf("%s: %s in the clear inside the tunnel", dir, what)
			}
		}
	}
}
