package invite

import (
	"bytes"
	"image/png"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	qrcode "github.com/skip2/go-qrcode"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func testPhone(t *testing.T) Phone {
	t.Helper()
	priv, _ := wgtypes.ParseKey("GHuMoiYTSS1ggpgTzEmG7wCeXAkiTd9dGxRsytjKLlE=")
	agent, _ := wgtypes.ParseKey("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=")
	return Phone{
		Name: "pixel", PrivateKey: priv, Address: netip.MustParseAddr("10.77.0.2"), AgentKey: agent,
		Endpoint:   "home.example.com:51820",
		AllowedIPs: AllowedIPs(netip.MustParsePrefix("10.77.0.1/24"), []netip.Addr{netip.MustParseAddr("192.168.1.20"), netip.MustParseAddr("192.168.1.20"), netip.MustParseAddr("10.77.0.9")}),
	}
}

func TestPhoneConfig(t *testing.T) {
	want := `# Porthole: pixel
[Interface]
PrivateKey = GHuMoiYTSS1ggpgTzEmG7wCeXAkiTd9dGxRsytjKLlE=
Address = 10.77.0.2/32
MTU = 1280

[Peer]
PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=
Endpoint = home.example.com:51820
AllowedIPs = 10.77.0.0/24, 192.168.1.20/32
PersistentKeepalive = 25
`
	if got := testPhone(t).Config(); got != want {
		t.Errorf("config:\n%s\nwant:\n%s", got, want)
	}
	wg := WGConf(want)
	for _, gone := range []string{"Address", "MTU"} {
		if strings.Contains(wg, gone) {
			t.Errorf("WGConf kept %s:\n%s", gone, wg)
		}
	}
	if !strings.Contains(wg, "PrivateKey = ") || !strings.Contains(wg, "AllowedIPs = 10.77.0.0/24, 192.168.1.20/32") {
		t.Errorf("WGConf lost lines:\n%s", wg)
	}
	p := testPhone(t)
	p.Address = netip.MustParseAddr("fd77::2")
	if !strings.Contains(p.Config(), "Address = fd77::2/128\n") {
		t.Errorf("v6 address:\n%s", p.Config())
	}
}

// TestQRTerminal reads the half blocks back into modules and compares them
// with the QR code's own bitmap.
func TestQRTerminal(t *testing.T) {
	text := testPhone(t).Config()
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		t.Fatal(err)
	}
	bits := q.Bitmap()
	for _, light := range []bool{false, true} {
		s, err := QRTerminal(text, light)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
		if len(lines) != (len(bits)+1)/2 {
			t.Fatalf("%d lines for %d rows", len(lines), len(bits))
		}
		for y, line := range lines {
			for x, r := range []rune(line) {
				top := r == '█' || r == '▀'
				bottom := r == '█' || r == '▄'
				// Drawn = light module on a dark terminal, dark on a light one.
				if top != (bits[2*y][x] == light) || 2*y+1 < len(bits) && bottom != (bits[2*y+1][x] == light) {
					t.Fatalf("light=%v: module (%d,%d) drawn wrong: %q", light, x, 2*y, r)
				}
			}
		}
	}
}

func TestQRPNG(t *testing.T) {
	text := testPhone(t).Config()
	b, err := QRPNG(text, 512)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if w := img.Bounds().Dx(); w < 400 || w > 600 {
		t.Errorf("width %d, want about 512", w)
	}
	// A real scanner reads it back, when there is one (zbar-tools).
	zbar, err := exec.LookPath("zbarimg")
	if err != nil {
		msg := "QR SCAN SKIPPED: zbarimg not installed, the PNG is not scanned back (apt-get install zbar-tools)"
		if os.Getenv("PORTHOLE_LAB") == "require" { // CI (.ci/run) installs it
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	path := filepath.Join(t.TempDir(), "phone.png")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(zbar, "--quiet", "--raw", path).Output()
	if err != nil {
		t.Fatalf("zbarimg: %v", err)
	}
	if got := strings.TrimSuffix(string(out), "\n"); got != text {
		t.Errorf("scanned:\n%q\nwant:\n%q", got, text)
	}
}
