// Package fakecloudflare is an in-memory Cloudflare API v4 over TLS
// (httptest) for tests: the zone lookup and DNS record endpoints that
// libdns/cloudflare calls, bearer-token checks, Cloudflare-style error
// bodies, and scripted faults (429 with Retry-After, 5xx, HTML error pages).
//
// Point a provider at it with base_url = Server.URL and an HTTP client that
// trusts its certificate (Server.Client()).
package fakecloudflare

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Record is one DNS record as the fake stores it (Name is a FQDN without dot).
type Record struct {
	ID, ZoneID, Name, Type, Content string
	TTL                             int
}

// Fault is a scripted failure answered instead of the real handler.
type Fault struct {
	// Status is the HTTP status to answer (e.g. 429, 500, 401).
	Status int
	// RetryAfter, if set, is sent as the Retry-After header.
	RetryAfter string
	// HTML answers an HTML body instead of Cloudflare's JSON (like a proxy error page).
	HTML bool
	// WritesOnly applies the fault only to POST/PATCH/PUT/DELETE.
	WritesOnly bool
}

// Server is a running fake.
type Server struct {
	// URL is the API base to use as provider base_url (ends in /client/v4).
	URL string
	// Token is the bearer token the fake accepts.
	Token string

	ts *httptest.Server

	mu      sync.Mutex        // guards the fields below
	zones   map[string]string // zone name -> id
	records map[string]Record // id -> record
	nextID  int
	reads   int
	writes  int
	faults  []Fault
	log     []string
}

// New starts a fake serving zones (names without trailing dot) that accepts
// token, and stops it when the test ends.
func New(t testing.TB, token string, zones ...string) *Server {
	t.Helper()
	s := &Server{Token: token, zones: map[string]string{}, records: map[string]Record{}}
	for i, z := range zones {
		s.zones[strings.TrimSuffix(strings.ToLower(z), ".")] = fmt.Sprintf("zone%032d", i+1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /client/v4/zones", s.listZones)
	mux.HandleFunc("GET /client/v4/zones/{zone}/dns_records", s.listRecords)
	mux.HandleFunc("POST /client/v4/zones/{zone}/dns_records", s.createRecord)
	mux.HandleFunc("PATCH /client/v4/zones/{zone}/dns_records/{id}", s.updateRecord)
	mux.HandleFunc("PUT /client/v4/zones/{zone}/dns_records/{id}", s.updateRecord)
	mux.HandleFunc("DELETE /client/v4/zones/{zone}/dns_records/{id}", s.deleteRecord)
	s.ts = httptest.NewTLSServer(s.middleware(mux))
	s.URL = s.ts.URL + "/client/v4"
	t.Cleanup(s.ts.Close)
	return s
}

// Client returns an HTTP client that trusts the fake's certificate.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Inject makes the next n matching requests fail with f.
func (s *Server) Inject(f Fault, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, f)
	}
}

// ClearFaults drops faults not yet used.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Reads and Writes count authenticated requests by kind (GET vs. the rest),
// including ones answered with a fault.
func (s *Server) Reads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

// Writes counts POST, PATCH, PUT and DELETE requests.
func (s *Server) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// Log returns "METHOD path?query" of every request so far.
func (s *Server) Log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// AddRecord stores a record directly (name relative to zone, or FQDN).
func (s *Server) AddRecord(zone, typ, name, content string, ttl int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	zone = strings.TrimSuffix(strings.ToLower(zone), ".")
	s.nextID++
	r := Record{ID: fmt.Sprintf("rec%029d", s.nextID), ZoneID: s.zones[zone], Name: fqdn(name, zone),
		Type: typ, Content: content, TTL: ttl}
	s.records[r.ID] = r
	return r.ID
}

// Lookup returns the contents of the records with this FQDN and type, sorted.
func (s *Server) Lookup(name, typ string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	for _, r := range s.records {
		if r.Name == name && r.Type == typ {
			out = append(out, r.Content)
		}
	}
	sort.Strings(out)
	return out
}

// All returns every record, sorted by name, type and content.
func (s *Server) All() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, 0, len(s.records))
	for _, r := range s.records {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		return a.Content < b.Content
	})
	return out
}

func fqdn(name, zone string) string {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	switch {
	case name == "@" || name == "":
		return zone
	case name == zone || strings.HasSuffix(name, "."+zone):
		return name
	default:
		return name + "." + zone
	}
}

type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, result any, info any, errs ...apiError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	body := map[string]any{
		"success":  len(errs) == 0,
		"errors":   errs,
		"messages": []any{},
		"result":   result,
	}
	if len(errs) == 0 {
		body["errors"] = []any{}
	}
	if info != nil {
		body["result_info"] = info
	}
	json.NewEncoder(w).Encode(body)
}

func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+s.Token {
			writeJSON(w, http.StatusUnauthorized, nil, nil, apiError{10000, "Authentication error"})
			return
		}
		write := r.Method != http.MethodGet
		s.mu.Lock()
		s.log = append(s.log, r.Method+" "+r.URL.RequestURI())
		if write {
			s.writes++
		} else {
			s.reads++
		}
		var fault *Fault
		for i, f := range s.faults {
			if !f.WritesOnly || write {
				fault = &f
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
				break
			}
		}
		s.mu.Unlock()
		if fault != nil {
			if fault.RetryAfter != "" {
				w.Header().Set("Retry-After", fault.RetryAfter)
			}
			if fault.HTML {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(fault.Status)
				fmt.Fprintf(w, "<html><body><h1>%d</h1>error</body></html>", fault.Status)
				return
			}
			code := 10000
			msg := http.StatusText(fault.Status)
			if fault.Status == http.StatusTooManyRequests {
				code, msg = 971, "Please wait and consider throttling your request speed"
			}
			writeJSON(w, fault.Status, nil, nil, apiError{code, msg})
			return
		}
		next.ServeHTTP(w, r)
	})
}

type zoneJSON struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
}

func (s *Server) listZones(w http.ResponseWriter, r *http.Request) {
	want := strings.TrimSuffix(strings.ToLower(r.URL.Query().Get("name")), ".")
	s.mu.Lock()
	var out []zoneJSON
	for name, id := range s.zones {
		if want == "" || want == name {
			out = append(out, zoneJSON{ID: id, Name: name, Status: "active"})
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if out == nil {
		out = []zoneJSON{}
	}
	writeJSON(w, http.StatusOK, out, map[string]int{"page": 1, "per_page": 20, "count": len(out), "total_count": len(out)})
}

// zoneNameLocked returns the name of the zone with this id.
func (s *Server) zoneNameLocked(id string) (string, bool) {
	for name, zid := range s.zones {
		if zid == id {
			return name, true
		}
	}
	return "", false
}

type recordJSON struct {
	ID         string    `json:"id"`
	ZoneID     string    `json:"zone_id"`
	ZoneName   string    `json:"zone_name"`
	Name       string    `json:"name"`
	Type       string    `json:"type"`
	Content    string    `json:"content"`
	Proxiable  bool      `json:"proxiable"`
	Proxied    bool      `json:"proxied"`
	TTL        int       `json:"ttl"`
	CreatedOn  time.Time `json:"created_on"`
	ModifiedOn time.Time `json:"modified_on"`
}

func (s *Server) toJSONLocked(rec Record) recordJSON {
	zn, _ := s.zoneNameLocked(rec.ZoneID)
	t := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return recordJSON{ID: rec.ID, ZoneID: rec.ZoneID, ZoneName: zn, Name: rec.Name, Type: rec.Type,
		Content: rec.Content, Proxiable: true, TTL: rec.TTL, CreatedOn: t, ModifiedOn: t}
}

// zoneOr404Locked returns the zone named in the path or answers 404.
func (s *Server) zoneOr404Locked(w http.ResponseWriter, r *http.Request) (string, bool) {
	zid := r.PathValue("zone")
	zn, ok := s.zoneNameLocked(zid)
	if !ok {
		writeJSON(w, http.StatusNotFound, nil, nil, apiError{7003, "Could not route to /zones/" + zid + "/dns_records, perhaps your object identifier is invalid?"})
	}
	return zn, ok
}

func (s *Server) listRecords(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	zn, ok := s.zoneOr404Locked(w, r)
	if !ok {
		return
	}
	var match []recordJSON
	for _, rec := range s.records {
		if rec.ZoneID != r.PathValue("zone") {
			continue
		}
		if v := q.Get("type"); v != "" && v != rec.Type {
			continue
		}
		if v := q.Get("name"); v != "" && fqdn(v, zn) != rec.Name {
			continue
		}
		if v, ok := q["content.exact"]; ok && v[0] != rec.Content {
			continue
		}
		if v := q.Get("content.contains"); v != "" && !strings.Contains(rec.Content, v) {
			continue
		}
		match = append(match, s.toJSONLocked(rec))
	}
	sort.Slice(match, func(i, j int) bool { return match[i].ID < match[j].ID })
	page, _ := strconv.Atoi(q.Get("page"))
	per, _ := strconv.Atoi(q.Get("per_page"))
	if page < 1 {
		page = 1
	}
	if per < 1 || per > 5000 {
		per = 100
	}
	lo, hi := min((page-1)*per, len(match)), min(page*per, len(match))
	out := match[lo:hi]
	if out == nil {
		out = []recordJSON{}
	}
	writeJSON(w, http.StatusOK, out, map[string]int{"page": page, "per_page": per, "count": len(out), "total_count": len(match)})
}

type recordIn struct {
	Type    string `json:"type"`
	Name    string `json:"name"`
	Content string `json:"content"`
	TTL     int    `json:"ttl"`
	Proxied bool   `json:"proxied"`
}

// validate checks what Cloudflare would check for A/AAAA records.
func validate(in recordIn) *apiError {
	switch in.Type {
	case "A", "AAAA":
		a, err := netip.ParseAddr(in.Content)
		if err != nil || (in.Type == "A") != a.Is4() {
			return &apiError{9005, "Content for " + in.Type + " record is invalid. Must be a valid IP address."}
		}
	case "":
		return &apiError{9020, "Invalid DNS record type"}
	}
	if in.TTL != 0 && in.TTL != 1 && (in.TTL < 60 || in.TTL > 86400) {
		return &apiError{9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic."}
	}
	return nil
}

func (s *Server) createRecord(w http.ResponseWriter, r *http.Request) {
	var in recordIn
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeJSON(w, http.StatusBadRequest, nil, nil, apiError{9207, "Request body is invalid."})
		return
	}
	if e := validate(in); e != nil {
		writeJSON(w, http.StatusBadRequest, nil, nil, *e)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	zn, ok := s.zoneOr404Locked(w, r)
	if !ok {
		return
	}
	name := fqdn(in.Name, zn)
	for _, rec := range s.records {
		if rec.Name == name && rec.Type == in.Type && rec.Content == in.Content {
			writeJSON(w, http.StatusBadRequest, nil, nil, apiError{81058, "An identical record already exists."})
			return
		}
	}
	s.nextID++
	rec := Record{ID: fmt.Sprintf("rec%029d", s.nextID), ZoneID: r.PathValue("zone"), Name: name,
		Type: in.Type, Content: in.Content, TTL: max(in.TTL, 1)}
	s.records[rec.ID] = rec
	writeJSON(w, http.StatusOK, s.toJSONLocked(rec), nil)
}

func (s *Server) updateRecord(w http.ResponseWriter, r *http.Request) {
	var in recordIn
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeJSON(w, http.StatusBadRequest, nil, nil, apiError{9207, "Request body is invalid."})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	zn, ok := s.zoneOr404Locked(w, r)
	if !ok {
		return
	}
	rec, ok := s.records[r.PathValue("id")]
	if !ok || rec.ZoneID != r.PathValue("zone") {
		writeJSON(w, http.StatusNotFound, nil, nil, apiError{81044, "Record does not exist."})
		return
	}
	if r.Method == http.MethodPut {
		rec.Type, rec.Name, rec.Content, rec.TTL = "", "", "", 1
	}
	if in.Type != "" {
		rec.Type = in.Type
	}
	if in.Name != "" {
		rec.Name = fqdn(in.Name, zn)
	}
	if in.Content != "" {
		rec.Content = in.Content
	}
	if in.TTL != 0 {
		rec.TTL = in.TTL
	}
	if e := validate(recordIn{Type: rec.Type, Name: rec.Name, Content: rec.Content, TTL: rec.TTL}); e != nil {
		writeJSON(w, http.StatusBadRequest, nil, nil, *e)
		return
	}
	s.records[rec.ID] = rec
	writeJSON(w, http.StatusOK, s.toJSONLocked(rec), nil)
}

func (s *Server) deleteRecord(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.zoneOr404Locked(w, r); !ok {
		return
	}
	rec, ok := s.records[r.PathValue("id")]
	if !ok || rec.ZoneID != r.PathValue("zone") {
		writeJSON(w, http.StatusNotFound, nil, nil, apiError{81044, "Record does not exist."})
		return
	}
	delete(s.records, rec.ID)
	writeJSON(w, http.StatusOK, map[string]string{"id": rec.ID}, nil)
}
