// Package fakerouter is a home router on loopback for tests: it answers
// SSDP searches, serves an IGD root description and a WANIPConnection (v1 or
// v2) or WANPPPConnection SOAP endpoint, and speaks NAT-PMP and PCP on one
// UDP port. It behaves like miniupnpd 2.3.1 where that matters (port < 1024
// refused with 606, conflicts give 718, lease clamping, PCP delete needs the
// same nonce) and lets a test script faults: UPnP error codes per action,
// NAT-PMP and PCP result codes, a different granted port, an empty external
// address, a router that accepts only permanent leases, silence, reboots,
// mappings dropped without a reboot and an epoch that jumps.
//
// Everything listens on 127.0.0.1 only.
package fakerouter

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures a Router. Every field is optional.
type Config struct {
	// Now is the router's clock (for the epoch and lease expiry). Nil = time.Now.
	Now func() time.Time
	// ExternalAddr is the WAN address. Default 203.0.113.2.
	ExternalAddr netip.Addr
	// IGDVersion 1 lists WANIPConnection:1 only, 2 (default) WANIPConnection:2
	// only, like miniupnpd's force_igd_desc_v1 off/on.
	IGDVersion int
	// PPP lists WANPPPConnection:1 instead of WANIPConnection.
	PPP bool
	// MinLifetime, MaxLifetime clamp NAT-PMP and PCP lifetimes. Default 120s, 86400s.
	MinLifetime, MaxLifetime time.Duration
	// UPnPMaxLease clamps UPnP leases on IGDv2, where 0 also becomes it. Default 604800 s.
	UPnPMaxLease uint32
}

// Mapping is one port forwarding the router holds.
type Mapping struct {
	Via         string // "upnp", "natpmp" or "pcp"
	Proto       string // "tcp" or "udp"
	External    uint16
	Internal    uint16
	Client      netip.Addr
	Description string
	Lifetime    time.Duration // 0 = permanent
	Expires     time.Time
	Nonce       [12]byte // PCP
}

// Event is one request the router handled.
type Event struct {
	Proto    string // "ssdp", "http", "upnp", "natpmp", "pcp"
	Op       string // SOAP action, "map", "delete", "addr", "announce", "search", "desc"
	External uint16 // external port asked for, when there is one
	Lifetime uint32 // lifetime asked for, when there is one
	Result   int    // 0, or the error code answered
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s port=%d lifetime=%d result=%d", e.Proto, e.Op, e.External, e.Lifetime, e.Result)
}

type mkey struct {
	proto string
	port  uint16
}

// Router is the fake router. Its methods are safe for concurrent use.
type Router struct {
	cfg    Config
	http   *httptest.Server
	ssdp   *net.UDPConn
	pmp    *net.UDPConn
	events chan Event
	wg     sync.WaitGroup

	mu          sync.Mutex // guards the fields below
	mappings    map[mkey]*Mapping
	epochStart  time.Time
	bootID      int
	ctlPath     string
	extAddr     netip.Addr
	faults      map[string]int // UPnP action -> error code
	natpmpRes   map[uint8]uint16
	pcpRes      map[uint8]uint8
	silent      map[string]bool
	onlyPerm    int
	portOffset  uint16
	noAddAny    bool
	pcpMismatch bool
}

// New starts a Router on 127.0.0.1. Close it when done.
func New(cfg Config) (*Router, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if !cfg.ExternalAddr.IsValid() {
		cfg.ExternalAddr = netip.MustParseAddr("203.0.113.2")
	}
	if cfg.IGDVersion == 0 {
		cfg.IGDVersion = 2
	}
	if cfg.MinLifetime == 0 {
		cfg.MinLifetime = 120 * time.Second
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = 86400 * time.Second
	}
	if cfg.UPnPMaxLease == 0 {
		cfg.UPnPMaxLease = 604800
	}
	r := &Router{
		cfg:        cfg,
		events:     make(chan Event, 4096),
		mappings:   map[mkey]*Mapping{},
		epochStart: cfg.Now(),
		bootID:     1,
		ctlPath:    "/ctl/IPConn1",
		extAddr:    cfg.ExternalAddr,
		faults:     map[string]int{},
		natpmpRes:  map[uint8]uint16{},
		pcpRes:     map[uint8]uint8{},
		silent:     map[string]bool{},
	}
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	var err error
	if r.ssdp, err = net.ListenUDP("udp4", lo); err != nil {
		return nil, err
	}
	if r.pmp, err = net.ListenUDP("udp4", lo); err != nil {
		r.ssdp.Close()
		return nil, err
	}
	r.http = httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	r.wg.Add(2)
	go r.serveSSDP()
	go r.servePMP()
	return r, nil
}

// Close stops the router and waits for its goroutines.
func (r *Router) Close() {
	r.http.Close()
	r.ssdp.Close()
	r.pmp.Close()
	r.wg.Wait()
}

// RootDescURL is the IGD root description's URL.
func (r *Router) RootDescURL() string { return r.http.URL + "/rootDesc.xml" }

// SSDPAddr is where the router answers M-SEARCHes.
func (r *Router) SSDPAddr() netip.AddrPort { return r.ssdp.LocalAddr().(*net.UDPAddr).AddrPort() }

// PMPAddr is the NAT-PMP and PCP server's address.
func (r *Router) PMPAddr() netip.AddrPort { return r.pmp.LocalAddr().(*net.UDPAddr).AddrPort() }

// Events delivers each handled request (dropped if nobody reads 4096 of them).
func (r *Router) Events() <-chan Event { return r.events }

func (r *Router) event(e Event) {
	select {
	case r.events <- e:
	default:
	}
}

// Mappings returns the current, unexpired mappings.
func (r *Router) Mappings() []Mapping {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked()
	var out []Mapping
	for _, m := range r.mappings {
		out = append(out, *m)
	}
	return out
}

// AddMapping puts m in the table (a stale one of ours, or another device's).
func (r *Router) AddMapping(m Mapping) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Lifetime > 0 && m.Expires.IsZero() {
		m.Expires = r.cfg.Now().Add(m.Lifetime)
	}
	r.mappings[mkey{m.Proto, m.External}] = &m
}

// SetFault makes the UPnP action answer with code (0 = behave normally).
func (r *Router) SetFault(action string, code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults[action] = code
}

// SetNATPMPResult makes NAT-PMP requests with opcode op (0 address, 1 UDP, 2 TCP) answer code.
func (r *Router) SetNATPMPResult(op uint8, code uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.natpmpRes[op] = code
}

// SetPCPResult makes PCP requests with opcode op (0 ANNOUNCE, 1 MAP) answer code.
func (r *Router) SetPCPResult(op uint8, code uint8) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pcpRes[op] = code
}

// SetSilent makes a part ("ssdp", "upnp", "natpmp", "pcp") ignore requests
// (UPnP: HTTP 404 for everything).
func (r *Router) SetSilent(part string, silent bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.silent[part] = silent
}

// SetOnlyPermanent makes UPnP refuse leases other than 0 with code: 725
// (OnlyPermanentLeasesSupported) or 402 (what some IGDv1 routers say). 0 = off.
func (r *Router) SetOnlyPermanent(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onlyPerm = code
}

// ClearMappings forgets every mapping without restarting (no epoch reset, same control URL).
func (r *Router) ClearMappings() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mappings = map[mkey]*Mapping{}
}

// SetPortOffset makes the router grant external port+offset
// (AddAnyPortMapping, NAT-PMP, PCP) instead of the port asked for.
func (r *Router) SetPortOffset(offset uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.portOffset = offset
}

// SetNoAddAnyPortMapping makes an IGDv2 router answer 401 to AddAnyPortMapping.
func (r *Router) SetNoAddAnyPortMapping(v bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.noAddAny = v
}

// SetExternalAddr changes the WAN address; zero makes UPnP report "" and
// NAT-PMP answer result 3, as miniupnpd does without a usable address.
func (r *Router) SetExternalAddr(a netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.extAddr = a
}

// Reboot forgets every mapping, restarts the epoch, bumps BOOTID and moves
// the UPnP control URL (the old one answers 404).
func (r *Router) Reboot() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mappings = map[mkey]*Mapping{}
	r.epochStart = r.cfg.Now()
	r.bootID++
	r.ctlPath = fmt.Sprintf("/ctl/IPConn%d", r.bootID)
}

// ShiftEpoch moves the NAT-PMP/PCP epoch (seconds since start of epoch)
// forward by d without touching the mappings, as a router whose clock
// jumped does; RFC 6886 3.6 and RFC 6887 8.5 tell clients to treat an epoch
// that moved differently from their own clock as a restart.
func (r *Router) ShiftEpoch(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.epochStart = r.epochStart.Add(-d)
}

func (r *Router) expireLocked() {
	now := r.cfg.Now()
	for k, m := range r.mappings {
		if m.Lifetime > 0 && !now.Before(m.Expires) {
			delete(r.mappings, k)
		}
	}
}

func (r *Router) epochLocked() uint32 {
	return uint32(r.cfg.Now().Sub(r.epochStart) / time.Second)
}

// freePortLocked returns want+offset if free (or held by the same owner), else the next free port.
func (r *Router) freePortLocked(proto string, want uint16, owns func(*Mapping) bool) uint16 {
	p := want + r.portOffset
	for i := 0; i < 1000; i++ {
		m := r.mappings[mkey{proto, p}]
		if m == nil || owns(m) {
			return p
		}
		p++
		if p < 1024 {
			p = 1024
		}
	}
	return 0
}

func (r *Router) serveSSDP() {
	defer r.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := r.ssdp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		msg := string(buf[:n])
		if !strings.HasPrefix(msg, "M-SEARCH ") {
			continue
		}
		var st string
		for _, l := range strings.Split(msg, "\r\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "ST") {
				st = strings.TrimSpace(v)
			}
		}
		r.mu.Lock()
		silent, boot := r.silent["ssdp"], r.bootID
		r.mu.Unlock()
		r.event(Event{Proto: "ssdp", Op: "search"})
		if silent || !(st == "ssdp:all" || strings.Contains(st, "InternetGatewayDevice") || strings.Contains(st, "WANIPConnection")) {
			continue
		}
		reply := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: " + st +
			"\r\nUSN: uuid:8a7b5c3e-77aa-4b1e-9d2c-203011300002::" + st +
			"\r\nEXT:\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\nLOCATION: " + r.RootDescURL() +
			"\r\nOPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\nBOOTID.UPNP.ORG: " + strconv.Itoa(boot) +
			"\r\nCONFIGID.UPNP.ORG: 1\r\n\r\n"
		r.ssdp.WriteToUDPAddrPort([]byte(reply), from)
	}
}

func (r *Router) serviceType() string {
	if r.cfg.PPP {
		return "urn:schemas-upnp-org:service:WANPPPConnection:1"
	}
	return fmt.Sprintf("urn:schemas-upnp-org:service:WANIPConnection:%d", r.cfg.IGDVersion)
}

func (r *Router) rootDesc(ctl string) string {
	v := r.cfg.IGDVersion
	return fmt.Sprintf(`<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1">
<specVersion><major>1</major><minor>1</minor></specVersion>
<device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:%[1]d</deviceType>
<friendlyName>fakerouter</friendlyName>
<manufacturer>porthole tests</manufacturer>
<UDN>uuid:8a7b5c3e-77aa-4b1e-9d2c-203011300002</UDN>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId>
<SCPDURL>/L3F.xml</SCPDURL><controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL>
</service></serviceList>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANDevice:%[1]d</deviceType>
<friendlyName>WANDevice</friendlyName>
<UDN>uuid:8a7b5c3e-77aa-4b1e-9d2c-203011300003</UDN>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:%[1]d</deviceType>
<friendlyName>WANConnectionDevice</friendlyName>
<UDN>uuid:8a7b5c3e-77aa-4b1e-9d2c-203011300004</UDN>
<serviceList><service>
<serviceType>%[2]s</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>%[3]s</controlURL><eventSubURL>/evt/IPConn</eventSubURL>
</service></serviceList>
</device></deviceList>
</device></deviceList>
</device>
</root>
`, v, r.serviceType(), ctl)
}

func (r *Router) serveHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	silent, ctl := r.silent["upnp"], r.ctlPath
	r.mu.Unlock()
	if silent {
		http.NotFound(w, req)
		return
	}
	switch {
	case req.Method == http.MethodGet && req.URL.Path == "/rootDesc.xml":
		r.event(Event{Proto: "http", Op: "desc"})
		w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
		io.WriteString(w, r.rootDesc(ctl))
	case req.Method == http.MethodPost && req.URL.Path == ctl:
		r.serveSOAP(w, req)
	default:
		http.NotFound(w, req)
	}
}

// parseSOAP returns the action name and its arguments.
func parseSOAP(body []byte) (string, map[string]string, error) {
	dec := xml.NewDecoder(bytes.NewReader(body))
	depth := 0
	action := ""
	args := map[string]string{}
	var cur string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			switch depth {
			case 3: // Envelope > Body > Action
				action = t.Name.Local
			case 4:
				cur = t.Name.Local
				args[cur] = ""
			}
		case xml.CharData:
			if depth == 4 {
				args[cur] += string(t)
			}
		case xml.EndElement:
			depth--
		}
	}
	if action == "" {
		return "", nil, fmt.Errorf("no action")
	}
	return action, args, nil
}

var upnpDescs = map[int]string{
	401: "Invalid Action", 402: "Invalid Args", 501: "ActionFailed", 606: "Action not authorized",
	714: "NoSuchEntryInArray", 718: "ConflictInMappingEntry", 725: "OnlyPermanentLeasesSupported",
	728: "NoPortMapsAvailable",
}

func (r *Router) serveSOAP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	action, args, err := parseSOAP(body)
	if err != nil {
		http.Error(w, "bad SOAP", http.StatusBadRequest)
		return
	}
	port64, _ := strconv.ParseUint(args["NewExternalPort"], 10, 16)
	lease64, _ := strconv.ParseUint(args["NewLeaseDuration"], 10, 32)
	ev := Event{Proto: "upnp", Op: action, External: uint16(port64), Lifetime: uint32(lease64)}

	out, code := r.soapAction(action, args)
	ev.Result = code
	r.event(ev)
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	const head = `<?xml version="1.0"?>` + "\r\n" + `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>`
	const tail = `</s:Body></s:Envelope>` + "\r\n"
	if code != 0 {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `%s<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>%s</errorDescription></UPnPError></detail></s:Fault>%s`,
			head, code, upnpDescs[code], tail)
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, `%s<u:%sResponse xmlns:u="%s">`, head, action, r.serviceType())
	for _, kv := range out {
		fmt.Fprintf(&b, "<%s>%s</%s>", kv[0], kv[1], kv[0])
	}
	fmt.Fprintf(&b, `</u:%sResponse>%s`, action, tail)
	io.WriteString(w, b.String())
}

func (r *Router) soapAction(action string, a map[string]string) ([][2]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked()
	if code := r.faults[action]; code != 0 {
		return nil, code
	}
	proto := strings.ToLower(a["NewProtocol"])
	ext64, _ := strconv.ParseUint(a["NewExternalPort"], 10, 16)
	int64_, _ := strconv.ParseUint(a["NewInternalPort"], 10, 16)
	lease64, _ := strconv.ParseUint(a["NewLeaseDuration"], 10, 32)
	ext, internal, lease := uint16(ext64), uint16(int64_), uint32(lease64)
	client, _ := netip.ParseAddr(a["NewInternalClient"])
	k := mkey{proto, ext}
	add := func(port uint16) {
		if r.cfg.IGDVersion == 2 && (lease == 0 || lease > r.cfg.UPnPMaxLease) {
			lease = r.cfg.UPnPMaxLease
		}
		m := &Mapping{Via: "upnp", Proto: proto, External: port, Internal: internal, Client: client,
			Description: a["NewPortMappingDescription"], Lifetime: time.Duration(lease) * time.Second}
		if lease > 0 {
			m.Expires = r.cfg.Now().Add(m.Lifetime)
		}
		r.mappings[mkey{proto, port}] = m
	}
	switch action {
	case "GetExternalIPAddress":
		s := ""
		if r.extAddr.IsValid() {
			s = r.extAddr.String()
		}
		return [][2]string{{"NewExternalIPAddress", s}}, 0
	case "AddPortMapping", "AddAnyPortMapping":
		if action == "AddAnyPortMapping" && (r.cfg.IGDVersion != 2 || r.cfg.PPP || r.noAddAny) {
			return nil, 401
		}
		if proto != "tcp" && proto != "udp" || ext == 0 || internal == 0 || !client.IsValid() {
			return nil, 402
		}
		if r.onlyPerm != 0 && lease != 0 {
			return nil, r.onlyPerm
		}
		if !r.extAddr.IsValid() {
			return nil, 501
		}
		if ext < 1024 {
			return nil, 606
		}
		owns := func(m *Mapping) bool { return m.Client == client }
		if action == "AddPortMapping" {
			if m := r.mappings[k]; m != nil && !owns(m) {
				return nil, 718
			}
			add(ext)
			return nil, 0
		}
		port := r.freePortLocked(proto, ext, owns)
		if port == 0 {
			return nil, 728
		}
		add(port)
		return [][2]string{{"NewReservedPort", strconv.Itoa(int(port))}}, 0
	case "DeletePortMapping":
		if r.mappings[k] == nil {
			return nil, 714
		}
		delete(r.mappings, k)
		return nil, 0
	case "GetSpecificPortMappingEntry":
		m := r.mappings[k]
		if m == nil {
			return nil, 714
		}
		left := uint32(0)
		if m.Lifetime > 0 {
			left = uint32(m.Expires.Sub(r.cfg.Now()) / time.Second)
		}
		return [][2]string{
			{"NewInternalPort", strconv.Itoa(int(m.Internal))},
			{"NewInternalClient", m.Client.String()},
			{"NewEnabled", "1"},
			{"NewPortMappingDescription", m.Description},
			{"NewLeaseDuration", strconv.FormatUint(uint64(left), 10)},
		}, 0
	}
	return nil, 401
}

func (r *Router) servePMP() {
	defer r.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := r.pmp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		var reply []byte
		if n >= 2 && buf[0] == 0 {
			reply = r.natpmp(buf[:n], from.Addr().Unmap())
		} else if n >= 24 && buf[0] == 2 {
			reply = r.pcp(buf[:n], from.Addr().Unmap())
		}
		if reply != nil {
			r.pmp.WriteToUDPAddrPort(reply, from)
		}
	}
}

func (r *Router) clampLocked(secs uint32) uint32 {
	d := time.Duration(secs) * time.Second
	d = max(d, r.cfg.MinLifetime)
	d = min(d, r.cfg.MaxLifetime)
	return uint32(d / time.Second)
}

func (r *Router) natpmp(b []byte, client netip.Addr) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.silent["natpmp"] {
		return nil
	}
	r.expireLocked()
	op := b[1]
	reply := make([]byte, 16)
	reply[1] = 128 + op
	binary.BigEndian.PutUint32(reply[4:8], r.epochLocked())
	result := func(code uint16, ev Event) []byte {
		ev.Proto, ev.Result = "natpmp", int(code)
		r.event(ev)
		binary.BigEndian.PutUint16(reply[2:4], code)
		if code != 0 {
			return reply[:8]
		}
		return reply
	}
	switch op {
	case 0:
		if code := r.natpmpRes[0]; code != 0 {
			return result(code, Event{Op: "addr"})
		}
		if !r.extAddr.IsValid() {
			return result(3, Event{Op: "addr"})
		}
		a := r.extAddr.As4()
		copy(reply[8:12], a[:])
		return result(0, Event{Op: "addr"})[:12]
	case 1, 2:
		if len(b) < 12 {
			return nil
		}
		proto := map[uint8]string{1: "udp", 2: "tcp"}[op]
		internal := binary.BigEndian.Uint16(b[4:6])
		suggested := binary.BigEndian.Uint16(b[6:8])
		life := binary.BigEndian.Uint32(b[8:12])
		ev := Event{Op: "map", External: suggested, Lifetime: life}
		if life == 0 {
			ev.Op = "delete"
		}
		if code := r.natpmpRes[op]; code != 0 {
			return result(code, ev)
		}
		if !r.extAddr.IsValid() {
			return result(3, ev)
		}
		binary.BigEndian.PutUint16(reply[8:10], internal)
		var mine *Mapping
		for _, m := range r.mappings {
			if m.Proto == proto && m.Internal == internal && m.Client == client {
				mine = m
			}
		}
		if life == 0 {
			if mine != nil {
				delete(r.mappings, mkey{proto, mine.External})
			}
			return result(0, ev)
		}
		var port uint16
		if mine != nil {
			port = mine.External
		} else {
			port = r.freePortLocked(proto, suggested, func(*Mapping) bool { return false })
			if port == 0 {
				return result(4, ev)
			}
		}
		life = r.clampLocked(life)
		r.mappings[mkey{proto, port}] = &Mapping{Via: "natpmp", Proto: proto, External: port, Internal: internal,
			Client: client, Lifetime: time.Duration(life) * time.Second, Expires: r.cfg.Now().Add(time.Duration(life) * time.Second)}
		binary.BigEndian.PutUint16(reply[10:12], port)
		binary.BigEndian.PutUint32(reply[12:16], life)
		return result(0, ev)
	}
	return result(5, Event{Op: fmt.Sprintf("op%d", op)})[:8]
}

// SetPCPAddressMismatch makes PCP answer every MAP with 12 ADDRESS_MISMATCH,
// as when a NAT sits between the client and the router.
func (r *Router) SetPCPAddressMismatch(v bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pcpMismatch = v
}

func (r *Router) pcp(b []byte, client netip.Addr) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.silent["pcp"] {
		return nil
	}
	r.expireLocked()
	op := b[1] & 0x7f
	reqLife := binary.BigEndian.Uint32(b[4:8])
	claimed := netip.AddrFrom16([16]byte(b[8:24])).Unmap()
	n := 24
	if op == 1 {
		n = 60
	}
	if len(b) < n {
		return nil
	}
	reply := make([]byte, n)
	reply[0], reply[1] = 2, 0x80|op
	binary.BigEndian.PutUint32(reply[8:12], r.epochLocked())
	if op == 1 {
		copy(reply[24:60], b[24:60])
	}
	ev := Event{Proto: "pcp", Op: "announce", Lifetime: reqLife}
	if op == 1 {
		ev.Op, ev.External = "map", binary.BigEndian.Uint16(b[42:44])
		if reqLife == 0 {
			ev.Op = "delete"
		}
	}
	fail := func(code uint8) []byte {
		reply[3] = code
		binary.BigEndian.PutUint32(reply[4:8], 30)
		if op == 1 {
			// Like miniupnpd: the address field is filled even on failure.
			a := netip.MustParseAddr("100.64.0.2").As16()
			copy(reply[44:60], a[:])
		}
		ev.Result = int(code)
		r.event(ev)
		return reply
	}
	if code := r.pcpRes[op]; code != 0 {
		return fail(code)
	}
	switch op {
	case 0:
		r.event(ev)
		return reply
	case 1:
	default:
		return fail(4)
	}
	if r.pcpMismatch || claimed != client {
		return fail(12)
	}
	if !r.extAddr.IsValid() {
		return fail(8)
	}
	var nonce [12]byte
	copy(nonce[:], b[24:36])
	proto := map[uint8]string{6: "tcp", 17: "udp"}[b[36]]
	if proto == "" {
		return fail(9)
	}
	internal := binary.BigEndian.Uint16(b[40:42])
	suggested := binary.BigEndian.Uint16(b[42:44])
	var mine *Mapping
	for _, m := range r.mappings {
		if m.Proto == proto && m.Internal == internal && m.Client == client && m.Via == "pcp" {
			mine = m
		}
	}
	if mine != nil && mine.Nonce != nonce {
		return fail(2) // "Unauthorized to remove PCP mapping"
	}
	if reqLife == 0 {
		if mine != nil {
			delete(r.mappings, mkey{proto, mine.External})
		}
		r.event(ev)
		return reply
	}
	var port uint16
	if mine != nil {
		port = mine.External
	} else {
		if suggested < 1024 {
			suggested = 1024
		}
		port = r.freePortLocked(proto, suggested, func(*Mapping) bool { return false })
		if port == 0 {
			return fail(8)
		}
	}
	life := r.clampLocked(reqLife)
	r.mappings[mkey{proto, port}] = &Mapping{Via: "pcp", Proto: proto, External: port, Internal: internal,
		Client: client, Nonce: nonce, Lifetime: time.Duration(life) * time.Second, Expires: r.cfg.Now().Add(time.Duration(life) * time.Second)}
	binary.BigEndian.PutUint32(reply[4:8], life)
	binary.BigEndian.PutUint16(reply[42:44], port)
	a := r.extAddr.As16()
	copy(reply[44:60], a[:])
	r.event(ev)
	return reply
}
