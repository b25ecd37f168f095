package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
)

// request is what a receiver got.
type request struct {
	header http.Header
	body   []byte
}

// receiver is a local HTTP server recording requests; answer picks the
// status of the n-th request (0-based); nil = 200.
type receiver struct {
	*httptest.Server
	got    chan request
	count  atomic.Int64
	answer func(n int64) int
}

func newReceiver(t *testing.T, answer func(n int64) int) *receiver {
	r := &receiver{got: make(chan request, 100), answer: answer}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := r.count.Add(1) - 1
		b, _ := io.ReadAll(req.Body)
		code := 200
		if r.answer != nil {
			code = r.answer(n)
		}
		w.WriteHeader(code)
		if code == 200 {
			r.got <- request{req.Header.Clone(), b}
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) next(t *testing.T) request {
	t.Helper()
	select {
	case q := <-r.got:
		return q
	case <-time.After(10 * time.Second):
		t.Fatal("no notification arrived within 10 s")
		return request{}
	}
}

// empty asserts nothing else has arrived (called after a later delivery,
// which the notifier's single dispatcher orders after anything let through).
func (r *receiver) empty(t *testing.T) {
	t.Helper()
	select {
	case q := <-r.got:
		t.Fatalf("unexpected notification: %s", q.body)
	default:
	}
}

// clock is a settable clock for the rate limits.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// start runs n until the test ends.
func start(t *testing.T, cfg Config) *Notifier {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return n
}

func TestWebhookEveryEvent(t *testing.T) {
	r := newReceiver(t, nil)
	n := start(t, Config{Agent: "home", KindBurst: 100, TotalBurst: 100,
		Targets: []Target{{Type: "webhook", URL: r.URL + "/hook/s3cret", Headers: map[string]string{"X-Key": "k1"}}}})
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, k := range []Kind{PathChange, AddressChange, CameraDown, CameraUp, TunnelDown, TunnelUp, Lockout, CertFailure} {
		n.Notify(Event{Kind: k, Message: "msg " + string(k), Time: at, Details: map[string]string{"service": "cam"}})
		q := r.next(t)
		var p Payload
		if err := json.Unmarshal(q.body, &p); err != nil {
			t.Fatalf("%s: body %q: %v", k, q.body, err)
		}
		want := Payload{Event: k, Agent: "home", Message: "msg " + string(k), Time: at, Details: map[string]string{"service": "cam"}}
		if p.Event != want.Event || p.Agent != want.Agent || p.Message != want.Message || !p.Time.Equal(at) || p.Details["service"] != "cam" {
			t.Errorf("%s: got %+v, want %+v", k, p, want)
		}
		if q.header.Get("X-Key") != "k1" || q.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: headers %v", k, q.header)
		}
	}
}

func TestNtfy(t *testing.T) {
	r := newReceiver(t, nil)
	n := start(t, Config{Agent: "home", Targets: []Target{{Type: "ntfy", URL: r.URL + "/cams", Token: "tk_abc"}}})
	n.Notify(Event{Kind: CameraDown, Message: "camera frontdoor (192.168.1.20:554) is not answering"})
	q := r.next(t)
	if string(q.body) != "camera frontdoor (192.168.1.20:554) is not answering" {
		t.Errorf("body %q", q.body)
	}
	for k, v := range map[string]string{"Title": "porthole home: camera down", "Priority": "high",
		"Authorization": "Bearer tk_abc", "Tags": "warning,video_camera"} {
		if got := q.header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
}

// shoutrrr's generic service posts to a local receiver: the library path end to end.
func TestShoutrrrGeneric(t *testing.T) {
	r := newReceiver(t, nil)
	u := strings.Replace(r.URL, "http://", "generic://", 1) + "/hook?disabletls=yes&template=json"
	n := start(t, Config{Agent: "home", Targets: []Target{{Type: "shoutrrr", URL: u}}})
	n.Notify(Event{Kind: TunnelDown, Message: "tunnel down for 1m"})
	q := r.next(t)
	if !bytes.Contains(q.body, []byte("tunnel down for 1m")) || !bytes.Contains(q.body, []byte("porthole home: tunnel down")) {
		t.Errorf("body %q", q.body)
	}
}

func TestShoutrrrBadURLHidesSecret(t *testing.T) {
	err := Check(Target{Type: "shoutrrr", URL: "nosuchservice://user:hunter2pass@host/s3cretpath"})
	if err == nil {
		t.Fatal("no error for an unknown service")
	}
	if s := err.Error(); strings.Contains(s, "hunter2pass") || strings.Contains(s, "s3cretpath") {
		t.Errorf("error shows a secret: %s", s)
	}
}

// Each family gets KindBurst at once; the rest is held back, and the
// latest of them goes out when the limit allows, counting the others.
func TestRateLimitPerKind(t *testing.T) {
	r := newReceiver(t, nil)
	clk := &clock{t: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	n := start(t, Config{Agent: "home", Now: clk.now, KindBurst: 2, KindEvery: time.Minute, TotalBurst: 100,
		FlushEvery: 5 * time.Millisecond, Targets: []Target{{Type: "webhook", URL: r.URL}}})
	kinds := []Kind{CameraDown, CameraUp, CameraDown, CameraUp, CameraDown}
	for i, k := range kinds {
		n.Notify(Event{Kind: k, Message: "m" + string(rune('0'+i))})
	}
	for i := range 2 {
		var p Payload
		json.Unmarshal(r.next(t).body, &p)
		if p.Message != "m"+string(rune('0'+i)) {
			t.Errorf("delivery %d: %q", i, p.Message)
		}
	}
	// Another family is not limited by the camera's.
	n.Notify(Event{Kind: PathChange, Message: "path"})
	var p Payload
	json.Unmarshal(r.next(t).body, &p)
	if p.Event != PathChange {
		t.Fatalf("got %+v, want the path change (camera events held back)", p)
	}
	r.empty(t)
	clk.add(time.Minute)
	json.Unmarshal(r.next(t).body, &p)
	if p.Event != CameraDown || !strings.HasPrefix(p.Message, "m4") || p.Details["held_back"] != "2" {
		t.Errorf("after a minute: %+v, want the latest camera event (m4) with held_back=2", p)
	}
}

func TestRateLimitOverall(t *testing.T) {
	r := newReceiver(t, nil)
	clk := &clock{t: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	n := start(t, Config{Agent: "home", Now: clk.now, KindBurst: 100, TotalBurst: 3, TotalEvery: time.Minute,
		FlushEvery: 5 * time.Millisecond, Targets: []Target{{Type: "webhook", URL: r.URL}}})
	for _, k := range []Kind{PathChange, AddressChange, Lockout, CertFailure, TunnelDown} {
		n.Notify(Event{Kind: k, Message: string(k)})
	}
	for range 3 {
		r.next(t)
	}
	r.empty(t)
	clk.add(time.Minute) // one token: the first held family in name order (cert_failure)
	var p Payload
	json.Unmarshal(r.next(t).body, &p)
	if p.Event != CertFailure {
		t.Errorf("got %s, want cert_failure", p.Event)
	}
	clk.add(time.Minute)
	json.Unmarshal(r.next(t).body, &p)
	if p.Event != TunnelDown {
		t.Errorf("got %s, want tunnel_down", p.Event)
	}
}

// A 500 is retried with backoff; a 404 is not.
func TestRetry(t *testing.T) {
	r := newReceiver(t, func(n int64) int {
		if n < 2 {
			return 500
		}
		return 200
	})
	n := start(t, Config{Agent: "home", Backoff: time.Millisecond, Targets: []Target{{Type: "webhook", URL: r.URL}}})
	n.Notify(Event{Kind: TunnelUp, Message: "up"})
	r.next(t)
	if c := r.count.Load(); c != 3 {
		t.Errorf("%d requests, want 3 (two 500s, then 200)", c)
	}

	var logs framework.LogBuffer
	gone := newReceiver(t, func(int64) int { return 404 })
	good := newReceiver(t, nil)
	n = start(t, Config{Agent: "home", Backoff: time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Targets: []Target{{Type: "webhook", URL: gone.URL + "/hook-s3cret"}, {Type: "webhook", URL: good.URL}}})
	n.Notify(Event{Kind: TunnelUp, Message: "up"})
	good.next(t)
	waitFor(t, func() bool { return strings.Contains(logs.String(), "failing") })
	if c := gone.count.Load(); c != 1 {
		t.Errorf("404: %d requests, want 1 (no retry)", c)
	}
	if s := logs.String(); !strings.Contains(s, "HTTP 404") || !strings.Contains(s, "check url") || strings.Contains(s, "s3cret") {
		t.Errorf("log: %s", s)
	}
}

// A receiver that never answers delays only itself, is logged once, and
// the events after it still reach the other target.
func TestHangingTarget(t *testing.T) {
	release := make(chan struct{})
	var hung atomic.Int64
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		hung.Add(1)
		select {
		case <-release:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	good := newReceiver(t, nil)
	var logs framework.LogBuffer
	n := start(t, Config{Agent: "home", Backoff: time.Millisecond, Timeout: 50 * time.Millisecond, Attempts: 2,
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Targets: []Target{{Type: "webhook", URL: hang.URL}, {Type: "webhook", URL: good.URL}}})
	for i := range 3 {
		n.Notify(Event{Kind: Lockout, Message: "lockout " + string(rune('a'+i))})
		good.next(t)
	}
	waitFor(t, func() bool { return hung.Load() >= 6 }) // 3 events x 2 attempts
	waitFor(t, func() bool { return strings.Count(logs.String(), "\n") >= 1 })
	if c := strings.Count(logs.String(), "notification target failing"); c != 1 {
		t.Errorf("failing logged %d times, want once:\n%s", c, logs.String())
	}
	if !strings.Contains(logs.String(), "did not answer in time") {
		t.Errorf("log lacks the fix: %s", logs.String())
	}
}

// Notify never blocks: with nobody running the notifier it drops past the
// queue, and the next event sent says how many were dropped.
func TestNotifyNeverBlocks(t *testing.T) {
	r := newReceiver(t, nil)
	n, err := New(Config{Agent: "home", Queue: 4, Targets: []Target{{Type: "webhook", URL: r.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		n.Notify(Event{Kind: PathChange, Message: "x"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	var p Payload
	json.Unmarshal(r.next(t).body, &p)
	if p.Details["dropped"] != "996" {
		t.Errorf("details %v, want dropped=996", p.Details)
	}
	var nilN *Notifier
	nilN.Notify(Event{Kind: Test}) // a nil Notifier ignores events
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestSendNow(t *testing.T) {
	good := newReceiver(t, nil)
	bad := newReceiver(t, func(int64) int { return 401 })
	n, err := New(Config{Agent: "home", Targets: []Target{{Type: "ntfy", URL: good.URL + "/t"}, {Type: "ntfy", URL: bad.URL + "/t"}}})
	if err != nil {
		t.Fatal(err)
	}
	res := n.SendNow(context.Background(), Event{Kind: Test, Message: "test"})
	if len(res) != 2 || res[0].Err != nil || res[1].Err == nil || !strings.Contains(res[1].Fix, "token") ||
		!strings.HasPrefix(res[1].Target, "notify[1] ntfy at 127.0.0.1:") {
		t.Errorf("results %+v", res)
	}
	if q := good.next(t); string(q.body) != "test" {
		t.Errorf("body %q", q.body)
	}
}
