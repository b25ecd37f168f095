package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// StatusFile is where a running agent keeps its status, inside state_dir; the
// status command reads it, so no control socket is exposed.
const StatusFile = "status.json"

func (a *Agent) saveStatus() {
	st := a.Status()
	st.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return
	}
	tmp := filepath.Join(a.ac.StateDir, "."+StatusFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return // the state_dir warning was logged at start
	}
	os.Rename(tmp, filepath.Join(a.ac.StateDir, StatusFile))
}

// ReadStatus reads the status a running agent saved in stateDir.
func ReadStatus(stateDir string) (Status, error) {
	var st Status
	b, err := os.ReadFile(filepath.Join(stateDir, StatusFile))
	if err != nil {
		return st, fmt.Errorf("no status in %s (is the agent running with this config?): %w", stateDir, err)
	}
	return st, json.Unmarshal(b, &st)
}

// PrintStatus writes st for a person.
func PrintStatus(w io.Writer, st Status) {
	fmt.Fprintf(w, "agent %s (status of %s)\n", st.Name, st.Updated.Local().Format(time.RFC3339))
	if st.Tunnel.Relay != "" {
		state := "down"
		if st.Tunnel.Connected {
			state = "up, relay sees us as " + st.Tunnel.Observed
		} else if st.Tunnel.LastError != "" {
			state += ": " + st.Tunnel.LastError
		}
		fmt.Fprintf(w, "tunnel:   %s: %s\n", st.Tunnel.Relay, state)
	}
	if st.PublicV4 != "" || st.PublicV6 != "" {
		fmt.Fprintf(w, "public:   %s %s\n", st.PublicV4, st.PublicV6)
	}
	if st.NAT != "" {
		fmt.Fprintf(w, "nat:      %s\n", st.NAT)
	}
	if st.Router.Gateway != "" || st.Router.Problem != "" {
		fmt.Fprintf(w, "router:   gateway %s, protocol %s, external %s\n", st.Router.Gateway, orNone(st.Router.Protocol), orNone(st.Router.External))
		for _, m := range st.Router.Mappings {
			fmt.Fprintf(w, "          %s\n", m)
		}
		if st.Router.Problem != "" {
			fmt.Fprintf(w, "          problem: %s\n", st.Router.Problem)
		}
	}
	fmt.Fprintf(w, "path:     %s (%s)\n", orNone(st.Path), st.PathWhy)
	if st.DNS != "" {
		fmt.Fprintf(w, "dns:      %s (%s)\n", st.DNS, st.DNSAction)
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
