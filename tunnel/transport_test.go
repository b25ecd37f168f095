package tunnel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
	"github.com/porthole-dev/porthole/tunnel/transport/tcptransport"
)

func serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "porthole-relay"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos: []string{proto.ALPN}, MinVersion: tls.VersionTLS13}
}

// testListen listens for QUIC and TLS over TCP on one loopback port number,
// retrying when the UDP port's TCP twin is taken.
func testListen(t *testing.T, requireRetry func() bool) (quic, tcp transport.Listener) {
	t.Helper()
	for try := 0; ; try++ {
		ln, err := quictransport.Listen(quictransport.ListenConfig{Addr: "127.0.0.1:0", TLSConfig: serverTLS(t), RequireRetry: requireRetry})
		if err != nil {
			t.Fatal(err)
		}
		tl, err := tcptransport.Listen(tcptransport.ListenConfig{Addr: ln.Addr().String(), TLSConfig: serverTLS(t)})
		if err == nil {
			return ln, tl
		}
		ln.Close()
		if try > 20 {
			t.Fatalf("tcp on the QUIC listener's port: %v", err)
		}
	}
}

var testDial = DialQUIC(nil)
