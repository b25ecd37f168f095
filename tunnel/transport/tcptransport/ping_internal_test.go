package tcptransport

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/tunnel/transport/transporttest"
)

// A yamux ping makes yamux start a goroutine that may wait 10 s to answer;
// the peer that sends one is disconnected instead (ours never do).
func TestPingDisconnects(t *testing.T) {
	ctls, stls := transporttest.TLSConfigs(t)
	ln, err := Listen(ListenConfig{Addr: "127.0.0.1:0", TLSConfig: stls})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := Dial(context.Background(), ln.Addr().String(), ctls, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseWithError(0, "")
	server, err := ln.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	go client.(*Conn).sess.Ping()
	select {
	case <-server.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server still up after a ping")
	}
	if cause := context.Cause(server.Context()); !errors.Is(cause, errPing) {
		t.Fatalf("cause %v, want errPing", cause)
	}
}
