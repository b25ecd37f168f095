package portmap

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// stateFile remembers the mappings this run made, so a later run can delete
// the ones a crash left behind. It holds PCP nonces (which allow deleting
// the mappings), so it is written 0600.
type stateFile struct {
	Mappings []stateMapping `json:"mappings"`
}

type stateMapping struct {
	Protocol    string `json:"protocol"` // "pcp", "natpmp" or "upnp"
	Proto       string `json:"proto"`    // "tcp" or "udp"
	External    uint16 `json:"external"`
	Internal    uint16 `json:"internal"`
	Granted     uint16 `json:"granted"`
	Description string `json:"description,omitempty"`
	Nonce       string `json:"nonce,omitempty"` // hex, PCP only
}

func (s stateMapping) mapping() Mapping {
	return Mapping{Proto: s.Proto, ExternalPort: s.External, InternalPort: s.Internal, Description: s.Description}
}

func (s stateMapping) nonce() [12]byte {
	var n [12]byte
	b, err := hex.DecodeString(s.Nonce)
	if err == nil && len(b) == len(n) {
		copy(n[:], b)
	}
	return n
}

// loadState reads path; a missing file is an empty state.
func loadState(path string) (stateFile, error) {
	var st stateFile
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return st, fmt.Errorf("read state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("parse state %s: %w", path, err)
	}
	valid := st.Mappings[:0]
	for _, m := range st.Mappings {
		if validMapping(m.mapping()) == nil && m.Granted != 0 {
			valid = append(valid, m)
		}
	}
	st.Mappings = valid
	return st, nil
}

// saveState writes st to path atomically, mode 0600.
func saveState(path string, st stateFile) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".portmap-state-*")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}
