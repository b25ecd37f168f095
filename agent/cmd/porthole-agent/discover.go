package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/agent/discover"
)

// maxPasswordFile bounds the camera password file discover reads.
const maxPasswordFile = 4096

// discoverCmd finds cameras on the LAN and prints services: entries. It needs
// no config.
func discoverCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-agent discover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg discover.Config
	list := func(dst *[]string) func(string) error {
		return func(s string) error {
			for _, f := range strings.Split(s, ",") {
				if f = strings.TrimSpace(f); f != "" {
					*dst = append(*dst, f)
				}
			}
			return nil
		}
	}
	ports := func(dst *[]int) func(string) error {
		return func(s string) error {
			*dst = []int{}
			for _, f := range strings.Split(s, ",") {
				if f = strings.TrimSpace(f); f == "" {
					continue
				}
				n, err := strconv.Atoi(f)
				if err != nil || n < 1 || n > 65535 {
					return fmt.Errorf("%q is not a port", f)
				}
				*dst = append(*dst, n)
			}
			return nil
		}
	}
	fs.Func("iface", "interfaces to send the multicast probe on, comma-separated (default: those with a private IPv4 address)", list(&cfg.Interfaces))
	fs.Func("host", "probe these hosts directly instead (unicast): IP, IP:port, name or CIDR, comma-separated or repeated; at most 1024 addresses", list(&cfg.Hosts))
	fs.StringVar(&cfg.Username, "user", "", "the cameras' ONVIF user, to learn stream paths")
	passwordFile := fs.String("password-file", "", "file holding the cameras' password (one line)")
	passwordStdin := fs.Bool("password-stdin", false, "read the cameras' password from stdin (one line)")
	fs.DurationVar(&cfg.Timeout, "timeout", 3*time.Second, "how long to wait for cameras to answer")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", 4*time.Second, "time limit of each ONVIF request and port probe")
	fs.Func("rtsp-ports", "RTSP ports to probe on each camera (default 554,8554)", ports(&cfg.RTSPPorts))
	fs.Func("http-ports", "HTTP ports to probe on each camera (default 80,8080)", ports(&cfg.HTTPPorts))
	firstPort := fs.Int("first-port", discover.DefaultFirstPort, "first public port to suggest")
	asJSON := fs.Bool("json", false, "print what was found as JSON instead of YAML")
	verbose := fs.Bool("v", false, "debug logging")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: porthole-agent discover [flags]\n"+
			"finds ONVIF cameras on the LAN and prints services: entries for agent.yaml\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "porthole-agent discover: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *firstPort < 1 || *firstPort > 65535 {
		fmt.Fprintf(stderr, "porthole-agent discover: -first-port %d is not a port\n", *firstPort)
		return 2
	}
	if *passwordFile != "" && *passwordStdin {
		fmt.Fprintln(stderr, "porthole-agent discover: give -password-file or -password-stdin, not both")
		return 2
	}
	if (*passwordFile != "" || *passwordStdin) && cfg.Username == "" {
		fmt.Fprintln(stderr, "porthole-agent discover: a password needs -user too")
		return 2
	}
	var err error
	switch {
	case *passwordFile != "":
		cfg.Password, err = readPasswordFile(*passwordFile)
	case *passwordStdin:
		cfg.Password, err = readLine(ctx, bufio.NewReader(stdin))
		if errors.Is(err, io.EOF) {
			err = errors.New("no password on stdin")
		}
	case cfg.Username != "":
		err = errors.New("-user needs -password-file FILE or -password-stdin (the password is never given on the command line)")
	}
	if err != nil {
		fmt.Fprintln(stderr, "porthole-agent discover:", err)
		return 1
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	where := "on the LAN (multicast)"
	if len(cfg.Hosts) > 0 {
		where = "at " + strings.Join(cfg.Hosts, ", ")
	}
	fmt.Fprintf(stderr, "looking for ONVIF cameras %s for %s...\n", where, cfg.Timeout)
	res, err := discover.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "porthole-agent discover:", err)
		return 1
	}
	if *asJSON {
		b, _ := json.MarshalIndent(res, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else if err := discover.WriteYAML(stdout, res, discover.YAMLOptions{FirstPort: *firstPort, Username: cfg.Username}); err != nil {
		fmt.Fprintln(stderr, "porthole-agent discover:", err)
		return 1
	}
	if len(res.Cameras) == 0 {
		fmt.Fprintf(stderr, "porthole-agent discover: no camera answered (probed %s)\n", strings.Join(res.Probed, ", "))
		return 1
	}
	return 0
}

// readPasswordFile reads a one-line password file.
func readPasswordFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPasswordFile+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxPasswordFile {
		return "", fmt.Errorf("%s: more than %d bytes: is it the password file?", path, maxPasswordFile)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("%s: empty (the password goes on its first line)", path)
	}
	return pw, nil
}
