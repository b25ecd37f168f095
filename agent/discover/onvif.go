package discover

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxSOAPAnswer bounds one ONVIF answer; a camera's GetProfiles with many
// profiles is a few tens of kilobytes.
const maxSOAPAnswer = 1 << 20

// maxProfiles bounds the media profiles kept (and asked a stream URI for).
const maxProfiles = 8

// ONVIF service namespaces.
const (
	nsDevice = "http://www.onvif.org/ver10/device/wsdl"
	nsMedia  = "http://www.onvif.org/ver10/media/wsdl"
	nsSchema = "http://www.onvif.org/ver10/schema"
)

// ErrNotAuthorized means the camera refused the ONVIF request's credentials
// (or wants some and none were given).
var ErrNotAuthorized = errors.New("not authorized")

// ErrAnswerTooLarge means a camera's answer exceeded maxSOAPAnswer.
var ErrAnswerTooLarge = errors.New("answer too large")

// FaultError is a SOAP fault a camera answered with.
type FaultError struct {
	Code, Subcode, Reason string
}

func (e *FaultError) Error() string {
	s := "SOAP fault " + e.Code
	if e.Subcode != "" {
		s += "/" + e.Subcode
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Unwrap makes errors.Is(err, ErrNotAuthorized) true for the ONVIF
// NotAuthorized subcode.
func (e *FaultError) Unwrap() error {
	if strings.HasSuffix(e.Subcode, "NotAuthorized") || strings.HasSuffix(e.Code, "NotAuthorized") {
		return ErrNotAuthorized
	}
	return nil
}

// Profile is one ONVIF media profile of a camera.
type Profile struct {
	Token     string `json:"token"`
	Name      string `json:"name,omitempty"`
	Encoding  string `json:"encoding,omitempty"`
	Width     int    `json:"width,omitempty"`
	Height    int    `json:"height,omitempty"`
	StreamURI string `json:"stream_uri,omitempty"`
}

// onvifClient speaks ONVIF SOAP to one camera.
type onvifClient struct {
	hc       *http.Client
	user     string
	password string
	now      func() time.Time
	offset   time.Duration // camera clock minus ours, for UsernameToken Created
}

// call posts one SOAP request with body (the element inside soap:Body) to
// url and decodes the answer into out, whose fields are tagged from the
// Envelope (e.g. `xml:"Body>GetProfilesResponse>Profiles"`).
func (c *onvifClient) call(ctx context.Context, url, action, body string, auth bool, out any) error {
	var env strings.Builder
	env.WriteString(`<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"` +
		` xmlns:tds="` + nsDevice + `" xmlns:trt="` + nsMedia + `" xmlns:tt="` + nsSchema + `">`)
	if auth && c.user != "" {
		env.WriteString("<s:Header>")
		env.WriteString(c.usernameToken())
		env.WriteString("</s:Header>")
	}
	env.WriteString("<s:Body>" + body + "</s:Body></s:Envelope>")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(env.String()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", `application/soap+xml; charset=utf-8; action="`+action+`"`)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxSOAPAnswer+1))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if len(b) > maxSOAPAnswer {
		return fmt.Errorf("%w (more than %d bytes)", ErrAnswerTooLarge, maxSOAPAnswer)
	}
	if err := decodeSOAP(b, out); err != nil {
		var fe *FaultError
		if errors.As(err, &fe) {
			return err
		}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return fmt.Errorf("HTTP %d: %w", resp.StatusCode, ErrNotAuthorized)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %s: %w", resp.Status, err)
		}
		return err
	}
	return nil
}

// decodeSOAP decodes a SOAP answer into out, or returns its fault.
func decodeSOAP(b []byte, out any) error {
	var f struct {
		Fault *struct {
			Code    string `xml:"Code>Value"`
			Subcode string `xml:"Code>Subcode>Value"`
			Reason  string `xml:"Reason>Text"`
		} `xml:"Body>Fault"`
	}
	if err := xml.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("not a SOAP answer: %w", err)
	}
	if f.Fault != nil {
		return &FaultError{Code: clip(strings.TrimSpace(f.Fault.Code)), Subcode: clip(strings.TrimSpace(f.Fault.Subcode)), Reason: clip(strings.TrimSpace(f.Fault.Reason))}
	}
	if err := xml.Unmarshal(b, out); err != nil {
		return fmt.Errorf("not a SOAP answer: %w", err)
	}
	return nil
}

// usernameToken is the WS-Security header with a PasswordDigest:
// Base64(SHA1(nonce + created + password)).
func (c *onvifClient) usernameToken() string {
	var nonce [16]byte
	rand.Read(nonce[:])
	created := c.now().Add(c.offset).UTC().Format("2006-01-02T15:04:05.000Z")
	return `<wsse:Security s:mustUnderstand="1"` +
		` xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"` +
		` xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">` +
		`<wsse:UsernameToken><wsse:Username>` + xmlEscape(c.user) + `</wsse:Username>` +
		`<wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">` +
		PasswordDigest(nonce[:], created, c.password) + `</wsse:Password>` +
		`<wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">` +
		base64.StdEncoding.EncodeToString(nonce[:]) + `</wsse:Nonce>` +
		`<wsu:Created>` + created + `</wsu:Created></wsse:UsernameToken></wsse:Security>`
}

// PasswordDigest is the WS-Security UsernameToken digest of password, as
// cameras check it: Base64(SHA1(nonce + created + password)).
func PasswordDigest(nonce []byte, created, password string) string {
	h := sha1.New()
	h.Write(nonce)
	h.Write([]byte(created))
	h.Write([]byte(password))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func xmlEscape(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// clockOffset asks the camera its UTC time (GetSystemDateAndTime needs no
// credentials), so that UsernameToken Created matches the camera's clock:
// many cameras refuse a digest more than a few seconds off.
func (c *onvifClient) clockOffset(ctx context.Context, deviceURL string) (time.Duration, error) {
	var r struct {
		D struct {
			Year   int `xml:"Date>Year"`
			Month  int `xml:"Date>Month"`
			Day    int `xml:"Date>Day"`
			Hour   int `xml:"Time>Hour"`
			Minute int `xml:"Time>Minute"`
			Second int `xml:"Time>Second"`
		} `xml:"Body>GetSystemDateAndTimeResponse>SystemDateAndTime>UTCDateTime"`
	}
	if err := c.call(ctx, deviceURL, nsDevice+"/GetSystemDateAndTime", "<tds:GetSystemDateAndTime/>", false, &r); err != nil {
		return 0, err
	}
	d := r.D
	if d.Year < 2000 || d.Year > 9999 || d.Month < 1 || d.Month > 12 || d.Day < 1 || d.Day > 31 {
		return 0, errors.New("the camera gave no UTC time")
	}
	cam := time.Date(d.Year, time.Month(d.Month), d.Day, d.Hour, d.Minute, d.Second, 0, time.UTC)
	return cam.Sub(c.now()), nil
}

// mediaURL asks the device service where the media service is.
func (c *onvifClient) mediaURL(ctx context.Context, deviceURL string) (string, error) {
	var r struct {
		Media string `xml:"Body>GetCapabilitiesResponse>Capabilities>Media>XAddr"`
	}
	err := c.call(ctx, deviceURL, nsDevice+"/GetCapabilities",
		"<tds:GetCapabilities><tds:Category>All</tds:Category></tds:GetCapabilities>", true, &r)
	if err != nil {
		return "", fmt.Errorf("GetCapabilities: %w", err)
	}
	if m := strings.TrimSpace(r.Media); m != "" {
		return clip(m), nil
	}
	return "", errors.New("GetCapabilities: the camera has no media service")
}

// profiles lists the camera's media profiles (at most maxProfiles).
func (c *onvifClient) profiles(ctx context.Context, mediaURL string) ([]Profile, error) {
	var r struct {
		Profiles []struct {
			Token    string `xml:"token,attr"`
			Name     string `xml:"Name"`
			Encoding string `xml:"VideoEncoderConfiguration>Encoding"`
			Width    string `xml:"VideoEncoderConfiguration>Resolution>Width"`
			Height   string `xml:"VideoEncoderConfiguration>Resolution>Height"`
		} `xml:"Body>GetProfilesResponse>Profiles"`
	}
	if err := c.call(ctx, mediaURL, nsMedia+"/GetProfiles", "<trt:GetProfiles/>", true, &r); err != nil {
		return nil, fmt.Errorf("GetProfiles: %w", err)
	}
	var out []Profile
	for _, p := range r.Profiles {
		if len(out) == maxProfiles {
			break
		}
		if p.Token == "" {
			continue
		}
		w, _ := strconv.Atoi(strings.TrimSpace(p.Width))
		h, _ := strconv.Atoi(strings.TrimSpace(p.Height))
		out = append(out, Profile{Token: clip(p.Token), Name: clip(strings.TrimSpace(p.Name)),
			Encoding: clip(strings.TrimSpace(p.Encoding)), Width: w, Height: h})
	}
	if len(out) == 0 {
		return nil, errors.New("GetProfiles: the camera listed no media profile")
	}
	return out, nil
}

// streamURI asks the RTSP URI of one profile.
func (c *onvifClient) streamURI(ctx context.Context, mediaURL, token string) (string, error) {
	var r struct {
		URI string `xml:"Body>GetStreamUriResponse>MediaUri>Uri"`
	}
	body := `<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>` +
		`<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>` +
		`<trt:ProfileToken>` + xmlEscape(token) + `</trt:ProfileToken></trt:GetStreamUri>`
	if err := c.call(ctx, mediaURL, nsMedia+"/GetStreamUri", body, true, &r); err != nil {
		return "", fmt.Errorf("GetStreamUri %s: %w", token, err)
	}
	if u := strings.TrimSpace(r.URI); u != "" {
		return clip(u), nil
	}
	return "", fmt.Errorf("GetStreamUri %s: no URI in the answer", token)
}

// snapshotURI asks the JPEG snapshot URI of one profile.
func (c *onvifClient) snapshotURI(ctx context.Context, mediaURL, token string) (string, error) {
	var r struct {
		URI string `xml:"Body>GetSnapshotUriResponse>MediaUri>Uri"`
	}
	body := `<trt:GetSnapshotUri><trt:ProfileToken>` + xmlEscape(token) + `</trt:ProfileToken></trt:GetSnapshotUri>`
	if err := c.call(ctx, mediaURL, nsMedia+"/GetSnapshotUri", body, true, &r); err != nil {
		return "", fmt.Errorf("GetSnapshotUri %s: %w", token, err)
	}
	if u := strings.TrimSpace(r.URI); u != "" {
		return clip(u), nil
	}
	return "", fmt.Errorf("GetSnapshotUri %s: no URI in the answer", token)
}
