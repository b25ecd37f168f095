package ddns

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// StateFile is the name of the last-published state in state_dir.
const StateFile = "ddns-state.json"

// stateVersion is the format version written into the file.
const stateVersion = 1

// maxStateSize bounds what LoadState and readState accept.
const maxStateSize = 64 << 10

// ErrBadState means a state file can't be used.
var ErrBadState = errors.New("bad ddns state file")

// State is what was last published, as kept in StateFile.
type State struct {
	Version  int    `json:"version"`
	Hostname string `json:"hostname"`
	Provider string `json:"provider"`
	// Published is what we believe the provider serves.
	Published Records `json:"published"`
	// UpdatedAt is when Published was last written to the provider.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// LoadState parses and checks a state file's contents.
func LoadState(data []byte) (State, error) {
	if len(data) > maxStateSize {
		return State{}, fmt.Errorf("%w: larger than %d bytes", ErrBadState, maxStateSize)
	}
	var s State
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return State{}, fmt.Errorf("%w: %w", ErrBadState, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return State{}, fmt.Errorf("%w: trailing data", ErrBadState)
	}
	if s.Version != stateVersion {
		return State{}, fmt.Errorf("%w: version %d, want %d", ErrBadState, s.Version, stateVersion)
	}
	if s.Hostname != normHost(s.Hostname) {
		return State{}, fmt.Errorf("%w: hostname not normalized", ErrBadState)
	}
	if err := validHostname(s.Hostname); err != nil {
		return State{}, fmt.Errorf("%w: %w", ErrBadState, err)
	}
	if s.Provider == "" || len(s.Provider) > 32 {
		return State{}, fmt.Errorf("%w: bad provider name", ErrBadState)
	}
	if err := s.Published.Validate(); err != nil {
		return State{}, fmt.Errorf("%w: %w", ErrBadState, err)
	}
	return s, nil
}

// marshal renders s for the file.
func (s State) marshal() ([]byte, error) {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// readState reads dir/StateFile; (State{}, nil) if there is none.
func readState(dir string) (State, bool, error) {
	f, err := os.Open(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("read ddns state: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return State{}, false, fmt.Errorf("read ddns state: %w", err)
	}
	s, err := LoadState(data)
	if err != nil {
		return State{}, false, fmt.Errorf("read ddns state %s: %w", f.Name(), err)
	}
	return s, true, nil
}

// writeState replaces dir/StateFile atomically: a 0600 temp file in the
// same directory, fsync, rename, fsync of the directory.
func writeState(dir string, s State) error {
	data, err := s.marshal()
	if err != nil {
		return fmt.Errorf("write ddns state: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write ddns state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+StateFile+".tmp*")
	if err != nil {
		return fmt.Errorf("write ddns state: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write ddns state: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write ddns state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write ddns state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write ddns state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, StateFile)); err != nil {
		os.Remove(tmp.Name())
		done = true
		return fmt.Errorf("write ddns state: %w", err)
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: makes the rename durable on most filesystems
		d.Close()
	}
	return nil
}
