package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/cairn-net/cairn/client"
)

// A home directory holds one user's client state:
//
//	key          the at-rest encryption key of db/ (32 bytes, hex), mode 0600
//	config.json  the display name for invites and the bootstrap relays
//	names.json   the names given to contacts with 'contact add'
//	db/          the client database (badger, encrypted with key)
const (
	homeKeyFile    = "key"
	homeConfigFile = "config.json"
	homeNamesFile  = "names.json"
	homeDBDir      = "db"
)

// homeConfig is config.json.
type homeConfig struct {
	Version int      `json:"version"`
	Name    string   `json:"name,omitempty"`
	Relays  []string `json:"relays,omitempty"`
	// KeyCheck identifies the key the database was created with (a MAC
	// of a label; it reveals nothing of the key), so a replaced key file
	// is refused with a clear message.
	KeyCheck string `json:"key_check,omitempty"`
}

// keyCheck is the KeyCheck of key.
func keyCheck(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("cairn/v1/cli/key-check"))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// home is an opened home directory.
type home struct {
	dir   string
	cfg   homeConfig
	key   []byte
	names map[string]client.ContactID
	lockf *os.File
}

// defaultHome is $CAIRN_HOME, else os.UserConfigDir()/cairn.
func defaultHome() string {
	if h := os.Getenv("CAIRN_HOME"); h != "" {
		return h
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return ".cairn"
	}
	return filepath.Join(d, "cairn")
}

var errNoHome = errors.New("not initialised")

// openHome reads a home's key, config and names.
func openHome(dir string) (*home, error) {
	h := &home{dir: dir, names: map[string]client.ContactID{}}
	kb, err := os.ReadFile(filepath.Join(dir, homeKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, inputErrorf("home %s is %w: run 'cairn init' (or pass --home)", dir, errNoHome)
	}
	if err != nil {
		return nil, fmt.Errorf("home: %w", err)
	}
	h.key, err = hex.DecodeString(strings.TrimSpace(string(kb)))
	if err != nil || len(h.key) != 32 {
		return nil, inputErrorf("home: %s is not a 32-byte hex key", filepath.Join(dir, homeKeyFile))
	}
	if err := readJSON(filepath.Join(dir, homeConfigFile), &h.cfg); err != nil {
		return nil, err
	}
	if err := readJSON(filepath.Join(dir, homeNamesFile), &h.names); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if h.cfg.KeyCheck != "" && !hmac.Equal([]byte(h.cfg.KeyCheck), []byte(keyCheck(h.key))) {
		return nil, errKeyMismatch(dir)
	}
	return h, nil
}

func errKeyMismatch(dir string) error {
	return inputErrorf("home %s: the key file does not open the database (was %s replaced?)", dir, homeKeyFile)
}

// lock takes the home's lock file for the life of the process: one
// command at a time per home (the database allows one process anyway;
// this says so clearly).
func (h *home) lock() error {
	f, err := os.OpenFile(filepath.Join(h.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("home: %w", err)
	}
	ok, err := lockFile(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("home: lock: %w", err)
	}
	if !ok {
		f.Close()
		return errHomeInUse(h.dir)
	}
	h.lockf = f // released when the process exits
	return nil
}

func errHomeInUse(dir string) error {
	return fmt.Errorf("home %s is in use by another cairn process (a 'cairn watch'?): stop it first", dir)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return fmt.Errorf("home: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return inputErrorf("home: %s: %v", path, err)
	}
	return nil
}

// writeFileAtomic writes a file through a temporary one and a rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'), 0o600)
}

// initHome creates a home: the directory (0700), the key (0600) and
// config.json. It refuses a home that has a key already.
func initHome(dir string, cfg homeConfig) (*home, error) {
	if _, err := os.Stat(filepath.Join(dir, homeKeyFile)); err == nil {
		return nil, fmt.Errorf("home %s is already initialised (its identity is kept; edit %s to change relays)", dir, filepath.Join(dir, homeConfigFile))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("home: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("home: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	cfg.Version = 1
	cfg.KeyCheck = keyCheck(key)
	if err := writeJSON(filepath.Join(dir, homeConfigFile), cfg); err != nil {
		return nil, fmt.Errorf("home: %w", err)
	}
	// The key last: a home is initialised once it has one.
	if err := writeFileAtomic(filepath.Join(dir, homeKeyFile), []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("home: %w", err)
	}
	return &home{dir: dir, cfg: cfg, key: key, names: map[string]client.ContactID{}}, nil
}

func (h *home) saveNames() error {
	if err := writeJSON(filepath.Join(h.dir, homeNamesFile), h.names); err != nil {
		return fmt.Errorf("home: %w", err)
	}
	return nil
}

// relays returns the bootstrap relays: the flags', else the config's.
func (h *home) relays(flags []string) []string {
	if len(flags) > 0 {
		return flags
	}
	return h.cfg.Relays
}

// openClient opens the home's client database.
func (h *home) openClient(relays []string, log *slog.Logger) (*client.Client, error) {
	if h.lockf == nil {
		if err := h.lock(); err != nil {
			return nil, err
		}
	}
	for _, r := range relays {
		if _, err := parseRelayAddr(r); err != nil {
			return nil, usageErrorf("--relay: %v", err)
		}
	}
	c, err := client.New(client.Config{
		DataDir:       filepath.Join(h.dir, homeDBDir),
		EncryptionKey: h.key,
		Bootstrap:     relays,
		Name:          h.cfg.Name,
		Logger:        log,
	})
	if err != nil {
		switch {
		case errors.Is(err, badger.ErrEncryptionKeyMismatch):
			return nil, errKeyMismatch(h.dir)
		case containsAny(err.Error(), "Cannot acquire directory lock", "resource temporarily unavailable"):
			return nil, errHomeInUse(h.dir)
		}
		return nil, err
	}
	return c, nil
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// contactLabel is how a contact is shown: its local name, else its invite
// name in brackets, else the start of its ID.
func (h *home) contactLabel(ct client.Contact) string {
	for name, id := range h.names {
		if id == ct.ID {
			return name
		}
	}
	if ct.Name != "" {
		return "[" + ct.Name + "]"
	}
	return shortID(ct.ID)
}

func shortID(id client.ContactID) string {
	if len(id) > 12 {
		return string(id[:12])
	}
	return string(id)
}

// resolveContact finds a contact by local name, by full ID, or by a unique
// ID prefix of at least 6 characters.
func (h *home) resolveContact(c *client.Client, ref string) (client.Contact, error) {
	if id, ok := h.names[ref]; ok {
		ct, err := c.Contact(id)
		if err != nil {
			return client.Contact{}, inputErrorf("contact %q: %v", ref, err)
		}
		return ct, nil
	}
	var found []client.Contact
	for _, ct := range c.Contacts() {
		if string(ct.ID) == ref {
			return ct, nil
		}
		if len(ref) >= 6 && strings.HasPrefix(string(ct.ID), ref) {
			found = append(found, ct)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		names := make([]string, 0, len(h.names))
		for n := range h.names {
			names = append(names, n)
		}
		slices.Sort(names)
		if len(names) == 0 {
			return client.Contact{}, inputErrorf("unknown contact %q (no contacts yet: 'cairn contact add NAME INVITE')", ref)
		}
		return client.Contact{}, inputErrorf("unknown contact %q (known: %s; see 'cairn contacts')", ref, strings.Join(names, ", "))
	}
	return client.Contact{}, inputErrorf("contact %q is ambiguous: %d contacts have an ID starting so", ref, len(found))
}
