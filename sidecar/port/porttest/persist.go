package porttest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Save writes the catalog (blueprints and entities, not tokens or counts)
// to Options.PersistFile if it changed since the last save. Without a
// PersistFile it does nothing. The file is replaced atomically.
func (e *Emulator) Save() error {
	if e.opts.PersistFile == "" {
		return nil
	}
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	e.mu.Lock()
	if !e.changed {
		e.mu.Unlock()
		return nil
	}
	data, err := json.Marshal(e.snapshotLocked())
	e.changed = false
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encoding the emulator state: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(e.opts.PersistFile), ".porttest-*.json")
	if err != nil {
		return fmt.Errorf("saving the emulator state to %s: %w", e.opts.PersistFile, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), e.opts.PersistFile); err != nil {
		return fmt.Errorf("saving the emulator state to %s: %w", e.opts.PersistFile, err)
	}
	return nil
}

// load reads Options.PersistFile if it exists.
func (e *Emulator) load() error {
	data, err := os.ReadFile(e.opts.PersistFile)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the emulator state: %w", err)
	}
	var snap Snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		return fmt.Errorf("decoding the emulator state in %s: %w", e.opts.PersistFile, err)
	}
	st := newStore()
	for _, raw := range snap.Blueprints {
		id, _ := raw["identifier"].(string)
		if id == "" {
			return fmt.Errorf("decoding the emulator state in %s: a blueprint has no identifier", e.opts.PersistFile)
		}
		st.blueprints[id] = newBPState(raw)
	}
	for bp, recs := range snap.Entities {
		if st.blueprints[bp] == nil {
			return fmt.Errorf("decoding the emulator state in %s: entities of unknown blueprint %q", e.opts.PersistFile, bp)
		}
		for _, r := range recs {
			st.save(bp, r)
		}
	}
	for id, in := range snap.Integrations {
		if in == nil || in.Identifier != id {
			return fmt.Errorf("decoding the emulator state in %s: integration %q is malformed", e.opts.PersistFile, id)
		}
		st.integrations[id] = in
	}
	e.st = st
	return nil
}
