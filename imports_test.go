package porthole_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestLibrariesDontTakeYAML enforces the layering of DESIGN.md: the agent's
// libraries take their own Config structs, and the agent (or main) maps the
// YAML onto them. A library that imports internal/config can't be reused or
// tested without a config file's types, and its defaults end up in two places.
func TestLibrariesDontTakeYAML(t *testing.T) {
	const forbidden = "github.com/porthole-dev/porthole/internal/config"
	libs := []string{"./agent/ddns", "./agent/publicip", "./agent/portmap", "./agent/notify", "./agent/wg", "./agent/wg/invite"}
	out, err := exec.Command("go", append([]string{"list", "-json=ImportPath,Deps,TestImports,XTestImports"}, libs...)...).Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for dec.More() {
		var p struct {
			ImportPath                      string
			Deps, TestImports, XTestImports []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		seen++
		for _, l := range []struct {
			what string
			list []string
		}{{"imports (directly or not)", p.Deps}, {"tests import", p.TestImports}, {"external tests import", p.XTestImports}} {
			what := l.what
			for _, imp := range l.list {
				if imp == forbidden || strings.HasPrefix(imp, forbidden+"/") {
					t.Errorf("%s %s %s: map the YAML onto the package's own Config in the agent instead", p.ImportPath, what, imp)
				}
			}
		}
	}
	if seen != len(libs) {
		t.Fatalf("go list described %d packages, want %d", seen, len(libs))
	}
}
