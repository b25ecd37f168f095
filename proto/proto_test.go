package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

func TestFrameRoundTrip(t *testing.T) {
	msgs := []Message{
		&Hello{Version: Version, Name: "home", Software: "test"},
		&RelayProof{MAC: []byte{1, 2, 3}},
		&AgentProof{MAC: []byte{4, 5}},
		&Welcome{Observed: "203.0.113.2:4242", HeartbeatMillis: 1000},
		&Refused{Reason: "no"},
		&Register{Services: []Service{{Name: "cam", Port: 10554, Allow: []string{"any"}}}},
		&Registered{Results: []ServiceResult{{Name: "cam", Port: 10554, Accepted: true}}},
		&Ping{Seq: 7},
		&Pong{Seq: 7, Observed: "1.2.3.4:5"},
		&ProbeRequest{ID: 1, Addr: "203.0.113.2:10554", Service: "cam"},
		&ProbeResult{ID: 1, OK: true, Millis: 3},
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range msgs {
		got, err := ReadMessage(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %#v, want %#v", got, want)
		}
	}
	if _, err := ReadMessage(&buf); err != io.EOF {
		t.Fatalf("at end: %v, want EOF", err)
	}
}

func TestUnknownTypeSkipped(t *testing.T) {
	var buf bytes.Buffer
	buf.Write([]byte{0, 0, 0, 3, 200, '{', '}'})
	WriteMessage(&buf, &Ping{Seq: 1})
	m, err := ReadMessage(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := m.(*Ping); !ok || p.Seq != 1 {
		t.Fatalf("got %#v", m)
	}
}

func TestFrameLimits(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrame+1)
	if _, err := ReadMessage(bytes.NewReader(hdr[:])); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := ReadMessage(bytes.NewReader([]byte{0, 0, 0, 0})); !errors.Is(err, ErrEmptyFrame) {
		t.Fatalf("empty: %v", err)
	}
	if _, err := ReadMessage(bytes.NewReader([]byte{0, 0, 0, 9, 1, '{'})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated: %v", err)
	}
	big := &Refused{Reason: strings.Repeat("x", MaxFrame)}
	if err := WriteMessage(io.Discard, big); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("write oversized: %v", err)
	}
	if _, err := DecodeFrame([]byte{byte(TypePing), 'x'}); err == nil {
		t.Fatal("garbage body accepted")
	}
}

func TestStreamHeaderRoundTrip(t *testing.T) {
	h := StreamHeader{Kind: StreamViewer, Service: "frontdoor", Viewer: "198.51.100.9:5555"}
	b, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(append(b, "payload"...))
	got, err := ReadStreamHeader(r)
	if err != nil || got != h {
		t.Fatalf("got %+v %v", got, err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "payload" {
		t.Fatalf("header consumed payload: %q", rest)
	}
	if _, err := (StreamHeader{Service: strings.Repeat("a", 256)}).MarshalBinary(); !errors.Is(err, ErrBadHeader) {
		t.Fatalf("long name: %v", err)
	}
	for _, bad := range [][]byte{{}, {2, 1, 0, 0}, {1, 9, 0, 0}, {1, 1, 5, 'a'}, {1, 1, 0}} {
		if _, err := ReadStreamHeader(bytes.NewReader(bad)); !errors.Is(err, ErrBadHeader) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

func TestProofs(t *testing.T) {
	tok, exp := []byte("token-token-token-token"), bytes.Repeat([]byte{7}, 32)
	r, a := RelayProofMAC(tok, "home", exp), AgentProofMAC(tok, "home", exp)
	if VerifyMAC(r, a) {
		t.Fatal("relay and agent proofs must differ (reflection)")
	}
	if !VerifyMAC(r, RelayProofMAC(tok, "home", exp)) {
		t.Fatal("proof not deterministic")
	}
	other := bytes.Repeat([]byte{8}, 32)
	if VerifyMAC(r, RelayProofMAC(tok, "home", other)) {
		t.Fatal("proof not bound to the exporter")
	}
	if VerifyMAC(r, RelayProofMAC(tok, "home2", exp)) || VerifyMAC(r, RelayProofMAC([]byte("other"), "home", exp)) {
		t.Fatal("proof not bound to name and token")
	}
}

// TestImportsNothingOfModule enforces that proto stays the wire format only.
func TestImportsNothingOfModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/porthole-dev/porthole/") && p != "github.com/porthole-dev/porthole/proto" {
			t.Errorf("proto imports %s", p)
		}
	}
}

func FuzzReadMessage(f *testing.F) {
	var buf bytes.Buffer
	WriteMessage(&buf, &Hello{Version: 1, Name: "home"})
	f.Add(buf.Bytes())
	buf.Reset()
	WriteMessage(&buf, &Register{Services: []Service{{Name: "a", Port: 1, Allow: []string{"any"}}}})
	f.Add(buf.Bytes())
	f.Add([]byte{0, 0, 0, 2, 8, '{'})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for i := 0; i < 8; i++ {
			m, err := ReadMessage(r)
			if err != nil {
				return
			}
			// Whatever decodes must re-encode.
			if err := WriteMessage(io.Discard, m); err != nil && !errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("re-encode %T: %v", m, err)
			}
		}
	})
}

func FuzzReadStreamHeader(f *testing.F) {
	b, _ := StreamHeader{Kind: StreamViewer, Service: "cam", Viewer: "1.2.3.4:5"}.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadStreamHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		enc, err := h.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, b[:len(enc)]) {
			t.Fatalf("re-encoded %x, input %x", enc, b)
		}
	})
}

// A heartbeat must be big enough on its own to draw a stateless reset from a
// restarted relay (peers ignore packets of 42 bytes or less), so a relay restart
// is noticed at the next ping rather than at the pong timeout.
func TestPingFrameDrawsStatelessReset(t *testing.T) {
	b, err := AppendFrame(nil, &Ping{Seq: 1, Pad: PingPad})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) <= 42 {
		t.Fatalf("a ping frame is %d bytes; the packet carrying it may be too small for a stateless reset", len(b))
	}
}

// stallReader yields its bytes, then blocks forever... modelled here as an error
// that is not EOF, as a read deadline would give.
type stallReader struct{ b []byte }

var errStalled = errors.New("stalled")

func (r *stallReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, errStalled
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// A frame header declaring MaxFrame bytes followed by nothing must not cost the
// declared length: an unauthenticated peer could otherwise make the relay allocate
// 64 KiB per connection by sending four bytes.
func TestReadMessageAllocatesAsBytesArrive(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrame)
	const runs = 200
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := ReadMessage(&stallReader{b: hdr[:]}); !errors.Is(err, errStalled) {
			t.Fatalf("err %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 8<<10 {
		t.Fatalf("a frame header declaring %d bytes followed by nothing allocated %d bytes", MaxFrame, per)
	}
	// And a full frame still arrives whole, across the growth steps.
	big := &Refused{Reason: strings.Repeat("x", MaxFrame-100)}
	var buf bytes.Buffer
	if err := WriteMessage(&buf, big); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMessage(iotest.OneByteReader(&buf))
	if err != nil || !reflect.DeepEqual(got, big) {
		t.Fatalf("big frame: %v", err)
	}
	buf.Reset()
	WriteMessage(&buf, big)
	if _, err := ReadMessageMax(&buf, 1024); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("ReadMessageMax: %v", err)
	}
}
