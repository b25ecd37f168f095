// Package fakeonvif is an ONVIF camera for tests: a WS-Discovery responder
// (unicast, and multicast on chosen interfaces), the ONVIF device and media
// SOAP services with a WS-Security UsernameToken (PasswordDigest) check, a
// snapshot URL and a minimal RTSP server that answers OPTIONS. It checks
// digests itself (not with the code under test), and lets a test script the
// odd cameras: no login needed, a clock that is off, garbage or huge answers.
package fakeonvif

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
)

// Profile is one media profile of the fake camera.
type Profile struct {
	Token, Name   string
	Path          string // RTSP path of its stream, with query if any
	Width, Height int
}

// Config configures a Camera. Every field is optional.
type Config struct {
	// Name and Hardware go into the ONVIF scopes. Default "Front Door", "FakeCam 1".
	Name, Hardware string
	// Username and Password: with a Username, every request but
	// GetSystemDateAndTime needs a valid UsernameToken digest.
	Username, Password string
	// Profiles default to a main and a sub stream.
	Profiles []Profile
	// ClockOffset is added to the camera's clock (GetSystemDateAndTime, and
	// the freshness check of Created, which allows 5 s).
	ClockOffset time.Duration
	// XAddrHost replaces the host in the advertised device URL (to test a
	// camera that points elsewhere). Default: the HTTP listener's host.
	XAddrHost string
	// ProbeReply, when set, is sent instead of a ProbeMatches (garbage,
	// huge answers); relatesTo is the probe's MessageID.
	ProbeReply func(relatesTo string) []byte
	// MediaBody, when set, replaces every media service answer body.
	MediaBody func() []byte
}

// Camera is a running fake camera. Its methods are safe for concurrent use.
type Camera struct {
	cfg      Config
	host     string
	http     net.Listener
	rtsp     net.Listener
	wsd      net.PacketConn
	srv      *http.Server
	wg       sync.WaitGroup
	closeOne sync.Once

	mu       sync.Mutex // guards the fields below
	requests []string
	authFail int
	mcast    net.PacketConn
}

// Start runs a camera with its HTTP, RTSP and WS-Discovery listeners on host
// (an IP address such as 127.0.0.1), each on a free port.
func Start(cfg Config, host string) (*Camera, error) {
	return StartPorts(cfg, host, 0, 0, 0)
}

// StartPorts is Start with given ports (0: a free one).
func StartPorts(cfg Config, host string, httpPort, rtspPort, wsdPort int) (*Camera, error) {
	if cfg.Name == "" {
		cfg.Name = "Front Door"
	}
	if cfg.Hardware == "" {
		cfg.Hardware = "FakeCam 1"
	}
	if cfg.Profiles == nil {
		cfg.Profiles = []Profile{
			{Token: "Profile_1", Name: "mainStream", Path: "/Streaming/Channels/101?transportmode=unicast", Width: 1920, Height: 1080},
			{Token: "Profile_2", Name: "subStream", Path: "/Streaming/Channels/102", Width: 640, Height: 360},
		}
	}
	c := &Camera{cfg: cfg, host: host}
	var err error
	if c.http, err = net.Listen("tcp", hostPort(host, httpPort)); err != nil {
		return nil, err
	}
	if c.rtsp, err = net.Listen("tcp", hostPort(host, rtspPort)); err != nil {
		c.http.Close()
		return nil, err
	}
	if c.wsd, err = net.ListenPacket("udp", hostPort(host, wsdPort)); err != nil {
		c.http.Close()
		c.rtsp.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/onvif/device_service", c.device)
	mux.HandleFunc("/onvif/media_service", c.media)
	mux.HandleFunc("/onvif/snapshot", c.snapshot)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "FakeCam-httpd")
		w.Header().Set("WWW-Authenticate", `Digest realm="FakeCam", nonce="abc", qop="auth"`)
		w.WriteHeader(http.StatusUnauthorized)
	})
	c.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	c.wg.Go(func() { c.srv.Serve(c.http) })
	c.wg.Go(c.serveRTSP)
	c.wg.Go(func() { c.serveWSD(c.wsd) })
	return c, nil
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// HTTPAddr, RTSPAddr and WSDAddr are the camera's listeners.
func (c *Camera) HTTPAddr() netip.AddrPort { return addrPort(c.http.Addr()) }
func (c *Camera) RTSPAddr() netip.AddrPort { return addrPort(c.rtsp.Addr()) }
func (c *Camera) WSDAddr() netip.AddrPort  { return addrPort(c.wsd.LocalAddr()) }

func addrPort(a net.Addr) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// DeviceURL is the device service URL the camera advertises.
func (c *Camera) DeviceURL() string {
	host := c.cfg.XAddrHost
	if host == "" {
		host = c.host
	}
	return "http://" + hostPort(host, int(c.HTTPAddr().Port())) + "/onvif/device_service"
}

// StreamURI is the RTSP URI of a profile.
func (c *Camera) StreamURI(p Profile) string {
	return "rtsp://" + hostPort(c.host, int(c.RTSPAddr().Port())) + p.Path
}

// SnapshotURI is the snapshot URL of a profile.
func (c *Camera) SnapshotURI(p Profile) string {
	return "http://" + hostPort(c.host, int(c.HTTPAddr().Port())) + "/onvif/snapshot?token=" + url.QueryEscape(p.Token)
}

// Requests lists the SOAP actions served so far ("GetProfiles", ...) and
// "probe" for each WS-Discovery probe answered.
func (c *Camera) Requests() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.requests...)
}

// AuthFailures counts requests refused for a bad or missing login.
func (c *Camera) AuthFailures() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.authFail
}

func (c *Camera) record(s string) {
	c.mu.Lock()
	c.requests = append(c.requests, s)
	c.mu.Unlock()
}

// JoinMulticast makes the camera answer WS-Discovery multicast probes
// received on ifi (239.255.255.250:3702). The first call binds 0.0.0.0:3702.
func (c *Camera) JoinMulticast(ifi *net.Interface) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mcast == nil {
		pc, err := net.ListenPacket("udp4", "0.0.0.0:3702")
		if err != nil {
			return err
		}
		c.mcast = pc
		c.wg.Go(func() { c.serveWSD(pc) })
	}
	if err := ipv4.NewPacketConn(c.mcast).JoinGroup(ifi, &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250)}); err != nil {
		return fmt.Errorf("join 239.255.255.250 on %s: %w", ifi.Name, err)
	}
	return nil
}

// Close stops the camera and waits for its goroutines.
func (c *Camera) Close() {
	c.closeOne.Do(func() {
		c.srv.Close()
		c.rtsp.Close()
		c.wsd.Close()
		c.mu.Lock()
		if c.mcast != nil {
			c.mcast.Close()
		}
		c.mu.Unlock()
		c.wg.Wait()
	})
}

// serveWSD answers WS-Discovery probes on pc.
func (c *Camera) serveWSD(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var probe struct {
			MessageID string `xml:"Header>MessageID"`
			Types     string `xml:"Body>Probe>Types"`
		}
		if xml.Unmarshal(buf[:n], &probe) != nil || probe.MessageID == "" {
			continue
		}
		if probe.Types != "" && !strings.Contains(probe.Types, "NetworkVideoTransmitter") {
			continue
		}
		c.record("probe")
		reply := c.probeMatches(probe.MessageID)
		if c.cfg.ProbeReply != nil {
			reply = c.cfg.ProbeReply(probe.MessageID)
		}
		if len(reply) > 0 {
			pc.WriteTo(reply, from) // unicast, to the prober's address and port

		}
	}
}

func (c *Camera) probeMatches(relatesTo string) []byte {
	scopes := "onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/Profile/Streaming" +
		" onvif://www.onvif.org/name/" + url.PathEscape(c.cfg.Name) +
		" onvif://www.onvif.org/hardware/" + url.PathEscape(c.cfg.Hardware)
	return []byte(`<?xml version="1.0" encoding="UTF-8"?>` +
		`<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope"` +
		` xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"` +
		` xmlns:dn="http://www.onvif.org/ver10/network/wsdl" xmlns:tds="http://www.onvif.org/ver10/device/wsdl">` +
		`<SOAP-ENV:Header><wsa:MessageID>urn:uuid:4b5e1a2c-0000-4000-8000-000000000001</wsa:MessageID>` +
		`<wsa:RelatesTo>` + esc(relatesTo) + `</wsa:RelatesTo>` +
		`<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>` +
		`<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action></SOAP-ENV:Header>` +
		`<SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch><wsa:EndpointReference><wsa:Address>urn:uuid:4b5e1a2c-1111-4000-8000-` +
		`0000000000aa</wsa:Address></wsa:EndpointReference><d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>` +
		`<d:Scopes>` + esc(scopes) + `</d:Scopes><d:XAddrs>` + esc(c.DeviceURL()) + `</d:XAddrs>` +
		`<d:MetadataVersion>10</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>`)
}

func esc(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// request is the part of a SOAP request the fake reads.
type request struct {
	Security struct {
		Username string `xml:"UsernameToken>Username"`
		Password string `xml:"UsernameToken>Password"`
		Nonce    string `xml:"UsernameToken>Nonce"`
		Created  string `xml:"UsernameToken>Created"`
	} `xml:"Header>Security"`
	Body struct {
		Inner []byte `xml:",innerxml"`
	} `xml:"Body"`
}

// read decodes a request and returns its action (the Body's first element).
func (c *Camera) read(r *http.Request) (request, string, error) {
	var req request
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return req, "", err
	}
	if err := xml.Unmarshal(b, &req); err != nil {
		return req, "", err
	}
	d := xml.NewDecoder(bytes.NewReader(req.Body.Inner))
	for {
		t, err := d.Token()
		if err != nil {
			return req, "", errors.New("empty body")
		}
		if se, ok := t.(xml.StartElement); ok {
			return req, se.Name.Local, nil
		}
	}
}

// accept reads and records a request; a malformed one gets a fault.
func (c *Camera) accept(w http.ResponseWriter, r *http.Request) (request, string, bool) {
	req, action, err := c.read(r)
	if err != nil {
		fault(w, "env:Sender", "ter:WellFormed", err.Error())
		return req, "", false
	}
	c.record(action)
	return req, action, true
}

// authorized checks the UsernameToken as a camera does.
func (c *Camera) authorized(req request) bool {
	if c.cfg.Username == "" {
		return true
	}
	s := req.Security
	nonce, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s.Nonce))
	if err != nil || s.Username != c.cfg.Username {
		return false
	}
	created, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s.Created))
	if err != nil {
		return false
	}
	if d := created.Sub(time.Now().Add(c.cfg.ClockOffset)); d > 5*time.Second || d < -5*time.Second {
		return false
	}
	h := sha1.New()
	h.Write(nonce)
	h.Write([]byte(strings.TrimSpace(s.Created)))
	h.Write([]byte(c.cfg.Password))
	return strings.TrimSpace(s.Password) == base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func (c *Camera) device(w http.ResponseWriter, r *http.Request) {
	req, action, ok := c.accept(w, r)
	if !ok {
		return
	}
	if action == "GetSystemDateAndTime" {
		t := time.Now().Add(c.cfg.ClockOffset).UTC()
		reply(w, fmt.Sprintf(`<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType>`+
			`<tt:UTCDateTime><tt:Time><tt:Hour>%d</tt:Hour><tt:Minute>%d</tt:Minute><tt:Second>%d</tt:Second></tt:Time>`+
			`<tt:Date><tt:Year>%d</tt:Year><tt:Month>%d</tt:Month><tt:Day>%d</tt:Day></tt:Date></tt:UTCDateTime>`+
			`</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>`, t.Hour(), t.Minute(), t.Second(), t.Year(), int(t.Month()), t.Day()))
		return
	}
	if !c.authorized(req) {
		c.refuse(w)
		return
	}
	switch action {
	case "GetCapabilities":
		base := "http://" + hostPort(c.host, int(c.HTTPAddr().Port()))
		reply(w, `<tds:GetCapabilitiesResponse><tds:Capabilities>`+
			`<tt:Device><tt:XAddr>`+base+`/onvif/device_service</tt:XAddr></tt:Device>`+
			`<tt:Media><tt:XAddr>`+base+`/onvif/media_service</tt:XAddr><tt:StreamingCapabilities><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>`+
			`</tds:Capabilities></tds:GetCapabilitiesResponse>`)
	default:
		fault(w, "env:Receiver", "ter:ActionNotSupported", "not supported: "+action)
	}
}

func (c *Camera) refuse(w http.ResponseWriter) {
	c.mu.Lock()
	c.authFail++
	c.mu.Unlock()
	fault(w, "env:Sender", "ter:NotAuthorized", "Sender not Authorized")
}

func (c *Camera) media(w http.ResponseWriter, r *http.Request) {
	req, action, ok := c.accept(w, r)
	if !ok {
		return
	}
	if !c.authorized(req) {
		c.refuse(w)
		return
	}
	if c.cfg.MediaBody != nil {
		w.Header().Set("Content-Type", "application/soap+xml; charset=utf-8")
		w.Write(c.cfg.MediaBody())
		return
	}
	token := func() (Profile, bool) {
		want := elementText(req.Body.Inner, "ProfileToken")
		for _, p := range c.cfg.Profiles {
			if p.Token == want {
				return p, true
			}
		}
		return Profile{}, false
	}
	switch action {
	case "GetProfiles":
		var b strings.Builder
		b.WriteString("<trt:GetProfilesResponse>")
		for _, p := range c.cfg.Profiles {
			fmt.Fprintf(&b, `<trt:Profiles token="%s" fixed="true"><tt:Name>%s</tt:Name>`+
				`<tt:VideoEncoderConfiguration token="VE_%s"><tt:Name>VE</tt:Name><tt:Encoding>H264</tt:Encoding>`+
				`<tt:Resolution><tt:Width>%d</tt:Width><tt:Height>%d</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>`,
				esc(p.Token), esc(p.Name), esc(p.Token), p.Width, p.Height)
		}
		b.WriteString("</trt:GetProfilesResponse>")
		reply(w, b.String())
	case "GetStreamUri", "GetSnapshotUri":
		p, ok := token()
		if !ok {
			fault(w, "env:Sender", "ter:NoProfile", "no such profile")
			return
		}
		uri := c.StreamURI(p)
		if action == "GetSnapshotUri" {
			uri = c.SnapshotURI(p)
		}
		reply(w, `<trt:`+action+`Response><trt:MediaUri><tt:Uri>`+esc(uri)+`</tt:Uri>`+
			`<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:`+action+`Response>`)
	default:
		fault(w, "env:Receiver", "ter:ActionNotSupported", "not supported: "+action)
	}
}

// elementText returns the trimmed text of the first element named local in b.
func elementText(b []byte, local string) string {
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		t, err := d.Token()
		if err != nil {
			return ""
		}
		if se, ok := t.(xml.StartElement); ok && se.Name.Local == local {
			var s string
			d.DecodeElement(&s, &se)
			return strings.TrimSpace(s)
		}
	}
}

func (c *Camera) snapshot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "image/jpeg")
	w.Write([]byte{0xff, 0xd8, 0xff, 0xd9})
}

const envOpen = `<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"` +
	` xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl"` +
	` xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:ter="http://www.onvif.org/ver10/error"><env:Body>`

func reply(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/soap+xml; charset=utf-8")
	io.WriteString(w, envOpen+body+"</env:Body></env:Envelope>")
}

func fault(w http.ResponseWriter, code, subcode, reason string) {
	w.Header().Set("Content-Type", "application/soap+xml; charset=utf-8")
	// cameras answer a refused login with 400 (some with 401), the fault inside
	w.WriteHeader(http.StatusBadRequest)
	io.WriteString(w, envOpen+`<env:Fault><env:Code><env:Value>`+code+`</env:Value><env:Subcode><env:Value>`+subcode+
		`</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">`+esc(reason)+`</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>`)
}

// serveRTSP answers OPTIONS (and refuses anything else) on each connection.
func (c *Camera) serveRTSP() {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		conn, err := c.rtsp.Accept()
		if err != nil {
			return
		}
		conns.Go(func() {
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
			defer stop()
			buf := make([]byte, 4096)
			var got []byte
			for !bytes.Contains(got, []byte("\r\n\r\n")) && len(got) < 16<<10 {
				n, err := conn.Read(buf)
				if err != nil {
					return
				}
				got = append(got, buf[:n]...)
			}
			cseq := "1"
			for _, l := range strings.Split(string(got), "\r\n") {
				if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "CSeq") {
					cseq = strings.TrimSpace(v)
				}
			}
			if strings.HasPrefix(string(got), "OPTIONS ") {
				fmt.Fprintf(conn, "RTSP/1.0 200 OK\r\nCSeq: %s\r\nServer: FakeCam-rtspd/1.0\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n", cseq)
				return
			}
			fmt.Fprintf(conn, "RTSP/1.0 401 Unauthorized\r\nCSeq: %s\r\nWWW-Authenticate: Digest realm=\"FakeCam\", nonce=\"abc\"\r\n\r\n", cseq)
		})
	}
}
