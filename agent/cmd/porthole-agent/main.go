// Command porthole-agent runs the Porthole agent on the home LAN. See the README.
//
//	porthole-agent -config agent.yaml          run
//	porthole-agent -config agent.yaml -once    one detect-and-update pass, then exit
//	porthole-agent -config agent.yaml -check   validate the config
//	porthole-agent -config agent.yaml status   what the running agent is doing
//	porthole-agent status -config agent.yaml   the same
//	porthole-agent passwd [NAME] < password    hash a viewer's password for viewers:
//	porthole-agent -config agent.yaml link NAME [-note TEXT]   a URL token for NAME
//	porthole-agent -config agent.yaml link -list | -revoke ID
//	porthole-agent discover [-host 192.168.1.0/24] [-user admin -password-file F]   cameras on the LAN
//	porthole-agent -config agent.yaml invite NAME -viewer VIEWER [-png FILE]   a phone's WireGuard config
//	porthole-agent -config agent.yaml invite -list | -revoke NAME
//	porthole-agent -config agent.yaml notify-test   send a test event to each notify: target
//	porthole-agent -config agent.yaml doctor        check relay, clock, state_dir, cameras, router, DNS
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
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/admin"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway/access"
	"github.com/porthole-dev/porthole/internal/procs"
	"github.com/porthole-dev/porthole/internal/profiling"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const defaultConfig = "/etc/porthole/agent.yaml"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := profiling.Start()
	startScheduler = func(ctx context.Context, log *slog.Logger) { procs.Run(ctx, procs.Config{Logger: log}) }
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	stopProfile()
	os.Exit(code)
}

// startScheduler sizes the scheduler to the daemon's load (package procs)
// while the agent runs; main sets it, tests that call run leave their process
// alone.
var startScheduler func(ctx context.Context, log *slog.Logger)

// run is the whole program, testable: it runs until ctx ends and returns the
// exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfig, "config file")
	check := fs.Bool("check", false, "validate the config, print problems, exit")
	once := fs.Bool("once", false, "detect the public address, update DNS if needed, print what was done, exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	verbose := fs.Bool("v", false, "debug logging")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: porthole-agent [-config agent.yaml] [-check|-once|-v] | -version\n"+
			"       porthole-agent [-config agent.yaml] status [-json] [-addr host:port]\n"+
			"       porthole-agent passwd [NAME] < password\n"+
			"       porthole-agent [-config agent.yaml] link NAME [-note TEXT] | link -list | link -revoke ID\n"+
			"       porthole-agent discover [-iface NAME] [-host IP|CIDR] [-user NAME -password-file FILE] [-json]\n"+
			"       porthole-agent [-config agent.yaml] invite NAME -viewer VIEWER [-png FILE] | invite -list | invite -revoke NAME\n"+
			"       porthole-agent [-config agent.yaml] notify-test | doctor [-time-url URL]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "porthole-agent", version)
		return 0
	}
	if fs.NArg() > 0 {
		// A command never falls through to starting the agent: a typo must not
		// start a second agent next to the running one.
		switch cmd := fs.Arg(0); cmd {
		case "status":
			return statusCmd(fs.Args()[1:], *cfgPath, stdout, stderr)
		case "passwd":
			return passwdCmd(ctx, fs.Args()[1:], stdout, stderr)
		case "link":
			return linkCmd(fs.Args()[1:], *cfgPath, stdout, stderr)
		case "discover":
			return discoverCmd(ctx, fs.Args()[1:], stdout, stderr)
		case "invite":
			return inviteCmd(fs.Args()[1:], *cfgPath, stdout, stderr)
		case "notify-test":
			return notifyTestCmd(ctx, fs.Args()[1:], *cfgPath, stdout, stderr)
		case "doctor":
			return doctorCmd(ctx, fs.Args()[1:], *cfgPath, stdout, stderr)
		default:
			fmt.Fprintf(stderr, "porthole-agent: unknown command %q (commands: status, passwd, link, invite, discover, notify-test, doctor); without a command it runs the agent\n", cmd)
			return 2
		}
	}
	ac, err := config.LoadAgent(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range append(ac.Warnings, agent.ConfigWarnings(ac)...) {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if probs := agent.NotifyProblems(ac, *cfgPath); len(probs) > 0 {
		for _, p := range probs {
			fmt.Fprintln(stderr, p)
		}
		return 1
	}
	if *check {
		fmt.Fprintf(stdout, "%s: ok (%d services)\n", *cfgPath, len(ac.Services))
		return 0
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	a, err := agent.New(agent.Config{Agent: ac, Logger: log, Version: version})
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if *once {
		if err := a.Once(ctx, stdout); err != nil {
			fmt.Fprintln(stderr, "porthole-agent -once:", err)
			return 1
		}
		return 0
	}
	adm, err := startAdmin(a, ac, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	var wg sync.WaitGroup
	if adm != nil {
		wg.Go(func() {
			if err := adm.Run(ctx); err != nil {
				log.Warn("admin endpoint stopped", "err", err)
			}
		})
	}
	if startScheduler != nil {
		wg.Go(func() { startScheduler(ctx, log) })
	}
	err = a.Run(ctx)
	if adm != nil {
		adm.Close()
	}
	wg.Wait()
	if err != nil {
		log.Error("agent failed", "err", err)
		return 1
	}
	return 0
}

// startAdmin binds the admin endpoint; nil when it is off. When the default
// address is taken (a second agent on this machine) the agent runs without it;
// an address set in the config must be free.
func startAdmin(a *agent.Agent, ac *config.Agent, log *slog.Logger) (*admin.Server, error) {
	if ac.Admin == "" {
		log.Info("admin endpoint off (admin: off); `porthole-agent status` reads " + filepath.Join(ac.StateDir, agent.StatusFile))
		return nil, nil
	}
	cfg := a.AdminConfig()
	cfg.Addr, cfg.Logger = ac.Admin, log.With("part", "admin")
	adm, err := admin.New(cfg)
	if err != nil && ac.AdminDefault {
		log.Warn("admin endpoint not started: its default address is taken (another agent on this machine?); set admin: to a free address, or admin: off",
			"addr", ac.Admin, "err", err)
		return nil, nil
	}
	return adm, err
}

// statusCmd asks the running agent for its status. It reads only the admin:
// and state_dir: keys of the config, so it needs no access to secrets.
func statusCmd(args []string, cfgPath string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-agent status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfgPath, "config", cfgPath, "the agent's config file (only admin: and state_dir: are read)")
	addr := fs.String("addr", "", "the agent's admin address (default: admin: from the config)")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "porthole-agent status: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	peek, err := config.PeekAgentAdmin(cfgPath)
	if err != nil {
		peek = config.AgentAdmin{Admin: config.DefaultAgentAdmin, StateDir: config.DefaultAgentStateDir}
		if *addr == "" {
			fmt.Fprintf(stderr, "note: %s; trying the default admin address %s\n", firstLine(err), peek.Admin)
		}
	}
	if *addr != "" {
		peek.Admin = *addr
	}
	now := time.Now()
	file := filepath.Join(peek.StateDir, agent.StatusFile)
	var st agent.Status
	saved := peek.Admin == ""
	if saved {
		st, err = agent.ReadStatus(peek.StateDir)
		if err != nil {
			fmt.Fprintf(stderr, "porthole-agent status: the admin endpoint is off (admin: off in %s), and %s\n", cfgPath, err)
			return 1
		}
		fmt.Fprintf(stderr, "the admin endpoint is off (admin: off in %s): showing what the agent last saved in %s\n", cfgPath, file)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err = agent.QueryStatus(ctx, nil, peek.Admin, peek.Name)
		if err != nil {
			fmt.Fprintln(stderr, "porthole-agent status:", err)
			if !errors.Is(err, agent.ErrNotRunning) {
				return 1
			}
			// A -once run (from cron, say) leaves its result in state_dir:
			// that is the status of an agent that never stays running.
			var rerr error
			if st, rerr = agent.ReadStatus(peek.StateDir); rerr != nil || !st.Once {
				return 1
			}
			saved = true
			fmt.Fprintf(stderr, "showing the last -once run's status, saved in %s\n", file)
		}
	}
	if *asJSON {
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		agent.PrintStatus(stdout, st, now)
	}
	if err := st.Stale(now); err != nil {
		if saved {
			fmt.Fprintf(stderr, "porthole-agent status: %s is old (%s): is porthole-agent running? systemctl status porthole-agent\n", file, err)
		} else {
			fmt.Fprintln(stderr, "porthole-agent status:", err, "(the agent answers but its loop seems stuck; its log may say why: journalctl -u porthole-agent)")
		}
		return 1
	}
	return 0
}

// firstLine shortens a config error (which may list many problems) to one line.
func firstLine(err error) string {
	s := err.Error()
	for i, c := range s {
		if c == '\n' {
			return s[:i] + " ..."
		}
	}
	return s
}

// stdin is where passwd reads the password; tests replace it.
var stdin io.Reader = os.Stdin

// minPassword is the shortest viewer password passwd accepts: a viewer
// password is what stands between the internet and the cameras.
const minPassword = 8

// passwdCmd hashes a viewer password read from stdin. It needs no config.
func passwdCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-agent passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: porthole-agent passwd [NAME] < password-file\n"+
			"reads one line (the password) and prints its hash for the viewers: section of agent.yaml\n")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	name := "NAME"
	switch fs.NArg() {
	case 0:
	case 1:
		name = fs.Arg(0)
	default:
		fmt.Fprintf(stderr, "porthole-agent passwd: unexpected argument %q\n", fs.Arg(1))
		return 2
	}
	pw, err := readPassword(ctx, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "porthole-agent passwd:", err)
		return 1
	}
	if n := utf8.RuneCountInString(pw); n < minPassword {
		fmt.Fprintf(stderr, "porthole-agent passwd: the password is too short (%d characters): use at least %d, "+
			"since it guards the cameras from the internet\n", n, minPassword)
		return 1
	}
	hash, err := access.HashPassword(pw)
	if err != nil {
		fmt.Fprintln(stderr, "porthole-agent passwd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n\n# add to the agent's config (agent.yaml), then restart the agent:\nviewers:\n  %s: {password_hash: %q}\n", hash, name, hash)
	return 0
}

// readPassword reads one line from stdin. On a terminal it prompts on stderr,
// hides the typing where stty can, and asks twice.
func readPassword(ctx context.Context, stderr io.Writer) (string, error) {
	f, isFile := stdin.(*os.File)
	tty := false
	if isFile {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	r := bufio.NewReader(stdin)
	if !tty {
		return readLine(ctx, r)
	}
	hidden := stty(f, "-echo") == nil
	if hidden {
		defer stty(f, "echo")
	} else {
		fmt.Fprintln(stderr, "note: the password will show as you type it")
	}
	var pws [2]string
	for i, prompt := range []string{"viewer password: ", "again: "} {
		fmt.Fprint(stderr, prompt)
		pw, err := readLine(ctx, r)
		if hidden {
			fmt.Fprintln(stderr)
		}
		if err != nil {
			return "", err
		}
		pws[i] = pw
	}
	if pws[0] != pws[1] {
		return "", errors.New("the two passwords differ")
	}
	return pws[0], nil
}

// readLine reads up to a newline (dropped, with a \r before it), giving up
// when ctx ends (Ctrl-C while the terminal waits).
func readLine(ctx context.Context, r *bufio.Reader) (string, error) {
	type line struct {
		s   string
		err error
	}
	ch := make(chan line, 1)
	go func() { // left blocked in a read only when the program is exiting
		s, err := r.ReadString('\n')
		ch <- line{s, err}
	}()
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case l := <-ch:
		if l.err != nil && !(errors.Is(l.err, io.EOF) && l.s != "") {
			if errors.Is(l.err, io.EOF) {
				return "", errors.New("no password on stdin (give it as one line: porthole-agent passwd < file)")
			}
			return "", fmt.Errorf("reading the password: %w", l.err)
		}
		return strings.TrimSuffix(strings.TrimSuffix(l.s, "\n"), "\r"), nil
	}
}

// stty sets the terminal mode of tty; the agent has no terminal library.
func stty(tty *os.File, mode string) error {
	cmd := exec.Command("stty", mode)
	cmd.Stdin = tty
	return cmd.Run()
}

// linkCmd creates, lists and revokes links (URL tokens). It reads state_dir:
// and, to check NAME and show example URLs, viewers:, ddns: and services:;
// it reads no secret file.
func linkCmd(args []string, cfgPath string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("porthole-agent link", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfgPath, "config", cfgPath, "the agent's config file")
	note := fs.String("note", "", "what the link is for (shown by -list)")
	list := fs.Bool("list", false, "list the links")
	revoke := fs.String("revoke", "", "revoke the link with this ID")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: porthole-agent link [-config agent.yaml] NAME [-note TEXT]   a new URL token for viewer NAME\n"+
			"       porthole-agent link [-config agent.yaml] -list\n"+
			"       porthole-agent link [-config agent.yaml] -revoke ID\n")
		fs.PrintDefaults()
	}
	names, err := parseNames(fs, args)
	if err != nil {
		return 2
	}
	if countTrue(*list, *revoke != "", len(names) > 0) != 1 || len(names) > 1 {
		fmt.Fprintln(stderr, "porthole-agent link: give one of NAME, -list or -revoke ID")
		fs.Usage()
		return 2
	}
	peek, err := config.PeekAgentAdmin(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	dir := peek.StateDir
	switch {
	case *list:
		links, err := access.ListLinks(dir)
		if err != nil {
			fmt.Fprintln(stderr, "porthole-agent link:", err)
			return 1
		}
		if len(links) == 0 {
			fmt.Fprintf(stdout, "no links in %s\n", filepath.Join(dir, access.LinksFile))
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tVIEWER\tCREATED\tNOTE")
		for _, l := range links {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.ID, l.Viewer, l.Created.Local().Format("2006-01-02 15:04"), l.Note)
		}
		tw.Flush()
		return 0
	case *revoke != "":
		if err := access.RevokeLink(dir, *revoke); err != nil {
			fmt.Fprintln(stderr, "porthole-agent link:", err)
			return 1
		}
		fmt.Fprintf(stdout, "link %s revoked; a running agent refuses it within a second\n", *revoke)
		return 0
	}
	name := names[0]
	lc, err := peekLinkConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "porthole-agent link:", err)
		return 1
	}
	if _, ok := lc.Viewers[name]; !ok {
		known := make([]string, 0, len(lc.Viewers))
		for v := range lc.Viewers {
			known = append(known, v)
		}
		sort.Strings(known)
		fmt.Fprintf(stderr, "porthole-agent link: no viewer %q in the viewers: of %s (viewers: %s); add one with porthole-agent passwd\n",
			name, cfgPath, strings.Join(known, ", "))
		return 1
	}
	token, l, err := access.CreateLink(dir, name, *note)
	if err != nil {
		fmt.Fprintln(stderr, "porthole-agent link:", err)
		return 1
	}
	host := lc.DDNS.Hostname
	if host == "" || strings.Contains(host, "$") {
		host = "HOST"
	}
	fmt.Fprintf(stdout, "%s\n\nlink %s for viewer %s: this token is shown only now; whoever has it watches as %s.\n"+
		"Give it to a player as the query parameter porthole_token=, for example:\n", token, l.ID, name, name)
	examples := 0
	for _, s := range lc.Services {
		if s.Kind == "http" && s.Port > 0 {
			fmt.Fprintf(stdout, "  https://%s:%d/?porthole_token=%s   (%s)\n", host, s.Port, token, s.Name)
			examples++
		}
	}
	if examples == 0 {
		fmt.Fprintf(stdout, "  https://%s:PORT/?porthole_token=%s\n", host, token)
	}
	fmt.Fprintf(stdout, "Revoke it with: porthole-agent link -revoke %s\n", l.ID)
	return 0
}

// parseNames parses a subcommand's flags with its NAME arguments before,
// between or after them, and returns the names.
func parseNames(fs *flag.FlagSet, args []string) ([]string, error) {
	var names []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return names, nil
		}
		names = append(names, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// countTrue is how many of the modes a command line asks for.
func countTrue(modes ...bool) int {
	n := 0
	for _, on := range modes {
		if on {
			n++
		}
	}
	return n
}

// linkConfig is the part of agent.yaml the link command reads.
type linkConfig struct {
	Viewers map[string]yaml.Node `yaml:"viewers"`
	DDNS    struct {
		Hostname string `yaml:"hostname"`
	} `yaml:"ddns"`
	Services []struct {
		Name string `yaml:"name"`
		Kind string `yaml:"kind"`
		Port int    `yaml:"port"`
	} `yaml:"services"`
}

// peekLinkConfig reads the keys link needs, leniently: config.LoadAgent
// would read the secret files too.
func peekLinkConfig(path string) (linkConfig, error) {
	var lc linkConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return lc, err
	}
	if err := yaml.Unmarshal(b, &lc); err != nil {
		return lc, fmt.Errorf("%s: %w", path, err)
	}
	return lc, nil
}
