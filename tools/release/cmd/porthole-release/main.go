// Command porthole-release builds Porthole's release artifacts (package
// release): `porthole-release -version V dist|deb|image ...`, run by the
// Makefile's dist, deb and image targets from the source tree's root.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/tools/release"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "porthole-release:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("porthole-release", flag.ContinueOnError)
	root := fs.String("root", ".", "the source tree (holding go.mod)")
	out := fs.String("out", "dist", "where the artifacts go")
	version := fs.String("version", "", "the version (main.version and file names); required")
	arch := fs.String("arch", "", "comma-separated targets (amd64,arm64,armv7); default all")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: porthole-release -version V [-root DIR] [-out DIR] [-arch LIST] dist|deb|image ...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("name what to build: dist, deb, image")
	}
	c := release.Config{Root: *root, Out: *out, Version: *version,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	// SOURCE_DATE_EPOCH (reproducible-builds.org): the time of every file.
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", s)
		}
		c.MTime = time.Unix(n, 0)
	}
	if *arch != "" {
		for _, a := range strings.Split(*arch, ",") {
			t, err := release.TargetNamed(strings.TrimSpace(a))
			if err != nil {
				return err
			}
			c.Targets = append(c.Targets, t)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	steps := map[string]func(context.Context, release.Config) ([]string, error){
		"dist": release.Dist, "deb": release.Deb, "image": release.Images,
	}
	for _, what := range fs.Args() {
		step, ok := steps[what]
		if !ok {
			return fmt.Errorf("unknown step %q (have dist, deb, image)", what)
		}
		if _, err := step(ctx, c); err != nil {
			return err
		}
	}
	return nil
}
