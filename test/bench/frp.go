package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
)

// frp (github.com/fatedier/frp) is the yardstick of issue #7: Porthole's
// targets are "QUIC at least 1.3x frp's QUIC, the TCP fallback at least frp's
// default transport", and the issue gave frp's figures from one run on
// another day. The bench measures frp itself beside Porthole, in the same
// run and the same way (frps and frpc as separate processes on loopback, one
// TCP proxy to the same backend), so that a target is judged against what frp
// does on this machine today. frp is built from test/bench/frp, a module of
// its own pinning the version (v0.65.0, with the yamux fork frp's releases
// use), so that frp's dependencies stay out of Porthole's go.mod.
//
// PORTHOLE_BENCH_FRP=DIR takes frps and frpc from DIR instead;
// PORTHOLE_BENCH_FRP=off leaves frp out (its figures then come from the
// issue, marked so).

// frpBins are the frps and frpc binaries.
type frpBins struct{ frps, frpc string }

// errNoFRP means frp is left out of this run.
var errNoFRP = errors.New("frp left out (PORTHOLE_BENCH_FRP=off)")

// frpBuild is buildFRP's result, kept for the process's runs.
var frpBuild struct {
	mu   sync.Mutex
	done bool
	bins frpBins
	err  error
	dir  string // the build's directory, removed by removeFRP
}

// buildFRP builds frps and frpc once per process (until removeFRP).
func buildFRP() (frpBins, error) {
	frpBuild.mu.Lock()
	defer frpBuild.mu.Unlock()
	if !frpBuild.done {
		frpBuild.bins, frpBuild.dir, frpBuild.err = buildFRPOnce()
		frpBuild.done = true
	}
	return frpBuild.bins, frpBuild.err
}

// removeFRP deletes the binaries buildFRP built; the next buildFRP builds again.
func removeFRP() {
	frpBuild.mu.Lock()
	defer frpBuild.mu.Unlock()
	if frpBuild.dir != "" {
		os.RemoveAll(frpBuild.dir)
	}
	frpBuild.done, frpBuild.bins, frpBuild.err, frpBuild.dir = false, frpBins{}, nil, ""
}

func buildFRPOnce() (bins frpBins, dir string, err error) {
	switch env := os.Getenv("PORTHOLE_BENCH_FRP"); env {
	case "off":
		return frpBins{}, "", errNoFRP
	case "":
	default:
		return frpBins{frps: filepath.Join(env, "frps"), frpc: filepath.Join(env, "frpc")}, "", nil
	}
	goBin, err := framework.GoTool()
	if err != nil {
		return frpBins{}, "", err
	}
	root := framework.ModuleRoot()
	if root == "" {
		return frpBins{}, "", framework.ErrNoModule
	}
	out, err := os.MkdirTemp("", "porthole-bench-frp-")
	if err != nil {
		return frpBins{}, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out+"/", "github.com/fatedier/frp/cmd/frps", "github.com/fatedier/frp/cmd/frpc")
	cmd.Dir = filepath.Join(root, "test", "bench", "frp")
	if msg, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(out)
		return frpBins{}, "", fmt.Errorf("bench: building frp (test/bench/frp; needs the Go module proxy once): %w\n%s", err, truncate(string(msg), 2000))
	}
	return frpBins{frps: filepath.Join(out, "frps"), frpc: filepath.Join(out, "frpc")}, out, nil
}

// frpFor is frp's binaries when withFRP, with the line that says why frp is
// missing from step's figures when it could not be built (none when left out).
func frpFor(withFRP bool, step string) (frpBins, []Figure, error) {
	if !withFRP {
		return frpBins{}, nil, errNoFRP
	}
	fb, err := buildFRP()
	if err != nil {
		return fb, []Figure{frpMissing(step+", frp", err)}, err
	}
	return fb, nil, nil
}

// frpStack is frps and frpc with one TCP proxy: ViewerAddr on frps forwards
// to the target through frpc.
type frpStack struct {
	frps, frpc *framework.Process
	dir        string
	ViewerAddr string
}

// startFRP starts frps and frpc over transport ("tcp": frp's default, TCP
// with TLS and yamux; "quic") and waits until frps listens for viewers.
func startFRP(ctx context.Context, fb frpBins, target, transport string) (*frpStack, error) {
	dir, err := os.MkdirTemp("", "porthole-bench-frp-run-")
	if err != nil {
		return nil, err
	}
	s := &frpStack{dir: dir}
	fail := func(err error) (*frpStack, error) {
		s.Close()
		return nil, fmt.Errorf("bench: frp %s: %w", transport, err)
	}
	bindPort, err := framework.FreePort("tcp")
	if err != nil {
		return fail(err)
	}
	quicPort, err := framework.FreePort("udp")
	if err != nil {
		return fail(err)
	}
	viewerPort, err := framework.FreePort("tcp")
	if err != nil {
		return fail(err)
	}
	_, targetPort, _ := strings.Cut(target, ":")
	token := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	serverPort := bindPort
	if transport == "quic" {
		serverPort = quicPort
	}
	frpsCfg, err := framework.WriteFile(dir, "frps.toml", fmt.Sprintf(
		"bindAddr = \"127.0.0.1\"\nbindPort = %d\nquicBindPort = %d\nauth.token = %q\nlog.level = \"warn\"\n",
		bindPort, quicPort, token))
	if err != nil {
		return fail(err)
	}
	frpcCfg, err := framework.WriteFile(dir, "frpc.toml", fmt.Sprintf(
		"serverAddr = \"127.0.0.1\"\nserverPort = %d\nauth.token = %q\ntransport.protocol = %q\nloginFailExit = false\nlog.level = \"warn\"\n\n"+
			"[[proxies]]\nname = \"cam\"\ntype = \"tcp\"\nlocalIP = \"127.0.0.1\"\nlocalPort = %s\nremotePort = %d\n",
		serverPort, token, transport, targetPort, viewerPort))
	if err != nil {
		return fail(err)
	}
	// the same prefix as relay and agent: quic-go in frp gets the UDP
	// buffers a service user gets, as Porthole's daemons do
	if s.frps, err = framework.Start(framework.Spec{Name: "frps", Path: fb.frps, Args: []string{"-c", frpsCfg},
		Prefix: dropNetAdmin(), MaxOutput: 1 << 20}); err != nil {
		return fail(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := s.frps.WaitListening(wctx, "tcp", bindPort); err != nil {
		return fail(fmt.Errorf("%w\nfrps: %s", err, framework.TailLines(s.frps.Output(), 10)))
	}
	if s.frpc, err = framework.Start(framework.Spec{Name: "frpc", Path: fb.frpc, Args: []string{"-c", frpcCfg},
		Prefix: dropNetAdmin(), MaxOutput: 1 << 20}); err != nil {
		return fail(err)
	}
	if err := s.frps.WaitListening(wctx, "tcp", viewerPort); err != nil {
		return fail(fmt.Errorf("%w\nfrps: %s\nfrpc: %s", err, framework.TailLines(s.frps.Output(), 10), framework.TailLines(s.frpc.Output(), 10)))
	}
	s.ViewerAddr = framework.Addr(viewerPort)
	return s, nil
}

// CPU is frps's and frpc's CPU time so far.
func (s *frpStack) CPU() (server, client time.Duration, err error) {
	a, err1 := s.frps.CPUTime()
	b, err2 := s.frpc.CPUTime()
	return a, b, errors.Join(err1, err2)
}

// Close kills frps and frpc and removes their files.
func (s *frpStack) Close() {
	for _, p := range []*framework.Process{s.frpc, s.frps} {
		if p != nil {
			p.Kill()
		}
	}
	os.RemoveAll(s.dir)
}

// frpLabel names frp's transport as the issue does.
func frpLabel(transport string) string {
	if transport == "tcp" {
		return "frp default (TCP+TLS+yamux)"
	}
	return "frp QUIC"
}
