// Package fakedyndns is a dyndns2 update server (GET /nic/update) over TLS
// for tests. It checks Basic auth and the User-Agent the way real servers
// do, keeps the addresses it was sent, and can be scripted to answer
// good/nochg/badauth/911/abuse/... or HTTP errors.
package fakedyndns

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// Answer is a scripted reply.
type Answer struct {
	// Status defaults to 200.
	Status int
	// Body such as "good 203.0.113.5", "badauth", "911". Scripted answers
	// change no stored address.
	Body string
	// RetryAfter, if set, is sent as the Retry-After header.
	RetryAfter string
}

// Request is what the server saw of one update.
type Request struct {
	Hostname, MyIP, MyIPv6, UserAgent string
	// AuthOK says the Basic credentials matched.
	AuthOK bool
}

// Server is a running fake.
type Server struct {
	// URL is the server base (https://127.0.0.1:port); updates go to URL+"/nic/update".
	URL string

	user, pass string
	ts         *httptest.Server

	mu        sync.Mutex // guards the fields below
	script    []Answer
	requests  []Request
	published map[string][2]netip.Addr // host -> {v4, v6}
}

// New starts a fake for user/pass that knows hosts, and stops it when the test ends.
func New(t testing.TB, user, pass string, hosts ...string) *Server {
	t.Helper()
	s := &Server{user: user, pass: pass, published: map[string][2]netip.Addr{}}
	for _, h := range hosts {
		s.published[strings.ToLower(h)] = [2]netip.Addr{}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /nic/update", s.update)
	s.ts = httptest.NewTLSServer(mux)
	s.URL = s.ts.URL
	t.Cleanup(s.ts.Close)
	return s
}

// Client returns an HTTP client that trusts the fake's certificate.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Script queues answers for the next requests; after them the server
// answers by its own logic.
func (s *Server) Script(a ...Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, a...)
}

// Requests returns the updates received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Published returns the addresses stored for host (zero if none).
func (s *Server) Published(host string) (v4, v6 netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.published[strings.ToLower(host)]
	return p[0], p[1]
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	user, pass, hasAuth := r.BasicAuth()
	req := Request{
		Hostname: q.Get("hostname"), MyIP: q.Get("myip"), MyIPv6: q.Get("myipv6"),
		UserAgent: r.UserAgent(), AuthOK: hasAuth && user == s.user && pass == s.pass,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
	w.Header().Set("Content-Type", "text/plain")

	if len(s.script) > 0 {
		a := s.script[0]
		s.script = s.script[1:]
		if a.RetryAfter != "" {
			w.Header().Set("Retry-After", a.RetryAfter)
		}
		if a.Status == 0 {
			a.Status = http.StatusOK
		}
		w.WriteHeader(a.Status)
		fmt.Fprintln(w, a.Body)
		return
	}

	switch {
	case !hasAuth:
		w.Header().Set("WWW-Authenticate", `Basic realm="fakedyndns"`)
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintln(w, "badauth")
		return
	case !req.AuthOK:
		fmt.Fprintln(w, "badauth")
		return
	case req.UserAgent == "" || strings.HasPrefix(req.UserAgent, "Go-http-client"):
		fmt.Fprintln(w, "badagent")
		return
	}
	host := strings.ToLower(req.Hostname)
	if host == "" || !strings.Contains(host, ".") {
		fmt.Fprintln(w, "notfqdn")
		return
	}
	if _, ok := s.published[host]; !ok {
		fmt.Fprintln(w, "nohost")
		return
	}
	v4, v6, ok := parseIPs(req)
	if !ok {
		// Real servers fall back to the client's address; the fake refuses
		// so a test notices a missing or bad myip.
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintln(w, "badrequest")
		return
	}
	old := s.published[host]
	changed := v4.IsValid() && v4 != old[0] || v6.IsValid() && v6 != old[1]
	s.storeLocked(host, v4, v6)
	var ips []string
	for _, a := range []netip.Addr{v4, v6} {
		if a.IsValid() {
			ips = append(ips, a.String())
		}
	}
	if changed {
		fmt.Fprintln(w, "good "+strings.Join(ips, ","))
	} else {
		fmt.Fprintln(w, "nochg "+strings.Join(ips, ","))
	}
}

func (s *Server) storeLocked(host string, v4, v6 netip.Addr) {
	host = strings.ToLower(host)
	p := s.published[host]
	if v4.IsValid() {
		p[0] = v4
	}
	if v6.IsValid() {
		p[1] = v6
	}
	s.published[host] = p
}

// parseIPs reads myip (comma separated, either family) and myipv6.
func parseIPs(req Request) (v4, v6 netip.Addr, ok bool) {
	for _, f := range strings.Split(req.MyIP+","+req.MyIPv6, ",") {
		if f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return netip.Addr{}, netip.Addr{}, false
		}
		if a.Is4() {
			v4 = a
		} else {
			v6 = a
		}
	}
	return v4, v6, v4.IsValid() || v6.IsValid()
}
