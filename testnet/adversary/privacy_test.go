package adversary

import (
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// needle is a secret that must not appear in what relays keep.
type needle struct {
	name string
	b    []byte
}

// encodings returns the forms a secret could be written in: raw, hex,
// base32 and base64 in their common variants.
func encodings(n needle) []needle {
	out := []needle{n}
	add := func(form, s string) { out = append(out, needle{n.name + " (" + form + ")", []byte(s)}) }
	add("hex", hex.EncodeToString(n.b))
	add("HEX", strings.ToUpper(hex.EncodeToString(n.b)))
	b32 := base32.StdEncoding.EncodeToString(n.b)
	add("base32", b32)
	add("base32 lower", strings.ToLower(b32))
	add("base32 unpadded", strings.TrimRight(b32, "="))
	add("base32 lower unpadded", strings.ToLower(strings.TrimRight(b32, "=")))
	add("base64", base64.StdEncoding.EncodeToString(n.b))
	add("base64 raw", base64.RawStdEncoding.EncodeToString(n.b))
	add("base64url", base64.URLEncoding.EncodeToString(n.b))
	add("base64url raw", base64.RawURLEncoding.EncodeToString(n.b))
	return out
}

// corpus is what a relay kept: named blobs.
type corpus map[string][]byte

// find returns where each needle (in every encoding) appears.
func (c corpus) find(ns []needle) []string {
	var hits []string
	for _, n := range ns {
		for _, e := range encodings(n) {
			for name, blob := range c {
				if bytes.Contains(blob, e.b) {
					hits = append(hits, fmt.Sprintf("%s in %s", e.name, name))
				}
			}
		}
	}
	slices.Sort(hits)
	return hits
}

// relayCorpus reads everything a closed relay left in dir: every file
// (raw bytes) and every key and value of its badger store, opened
// read-only, all versions.
func relayCorpus(t testing.TB, dir string) corpus {
	t.Helper()
	c := corpus{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		c["file "+path] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "store")).WithReadOnly(true).WithLogger(nil))
	if err != nil {
		t.Fatalf("open %s read-only: %v", dir, err)
	}
	defer db.Close()
	var kv bytes.Buffer
	n := 0
	err = db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.AllVersions = true
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			kv.Write(item.Key())
			kv.WriteByte(0)
			kv.Write(v)
			kv.WriteByte(0)
			c[fmt.Sprintf("kv %s #%d", dir, n)] = append(bytes.Clone(item.Key()), v...)
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("%s: no keys in the store", dir)
	}
	return c
}

// entryLog records every entry a relay stored (relay.Config.Forwarder).
type entryLog struct {
	mu      sync.Mutex
	entries []store.StoredEntry
}

func (l *entryLog) Stored(e store.StoredEntry) {
	l.mu.Lock()
	l.entries = append(l.entries, store.StoredEntry{Envelope: bytes.Clone(e.Envelope), Stamp: e.Stamp})
	l.mu.Unlock()
}

func (l *entryLog) Tombstoned([]store.Tombstone) {}

func (l *entryLog) all() []store.StoredEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.entries)
}

// secrets are the public secrets of one client that must never reach a
// relay: identity keys, bundle parts, its invite. (Private keys are read
// from its database after Close: privateSecrets.)
type secrets struct {
	public []needle
}

func clientSecrets(t testing.TB, c *client.Client, name string) secrets {
	t.Helper()
	id := c.Identity()
	inv, err := c.Invite()
	if err != nil {
		t.Fatal(err)
	}
	qr, err := c.InviteQR()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := wire.ParseInvite(inv)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := parsed.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ratchet.ParseBundle(parsed.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	return secrets{public: []needle{
		{name + " identity Ed25519", id.Ed25519[:]},
		{name + " identity X25519", id.X25519[:]},
		{name + " signed prekey", b.SignedPrekey[:]},
		{name + " KEM prekey", b.KEMPrekey[:64]},
		{name + " bundle signature", b.Signature[:]},
		{name + " bundle", parsed.Bundle},
		{name + " invite", []byte(inv)},
		{name + " invite QR", []byte(qr)},
		{name + " invite payload", payload},
	}}
}

// privateSecrets reads a closed client's private keys from its database.
func privateSecrets(t testing.TB, cfg client.Config, name string) []needle {
	t.Helper()
	db, err := store.OpenClientDB(store.ClientOptions{Dir: cfg.DataDir, EncryptionKey: cfg.EncryptionKey})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out []needle
	err = db.View(func(tx *store.ClientTx) error {
		id, err := tx.Identity()
		if err != nil {
			return err
		}
		keys, err := ratchet.ParsePrivateKeys(id.Keys)
		if err != nil {
			return err
		}
		raw, err := keys.Identity().MarshalBinary()
		if err != nil {
			return err
		}
		out = append(out,
			needle{name + " identity signing seed", keys.Identity().SigningKey().Seed()},
			needle{name + " mailbox seed", id.MailboxSeed})
		for i := 0; i+32 <= len(raw); i += 32 {
			out = append(out, needle{fmt.Sprintf("%s identity private key bytes %d–%d", name, i, i+32), raw[i : i+32]})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPrivacyRelaysKeepNoSecrets runs a real conversation through three
// relays — invites exchanged out of band, a handshake with one-time
// prekeys fetched from the relays, three messages each way, delivery
// receipts, prekey uploads — with every relay logging at debug level into
// a buffer. Then it scans every relay's files (raw bytes), its badger
// store (every key and value, all versions, opened read-only after Close)
// and its log: no identity key (Ed25519 or X25519, public or private), no
// private or prekey material from the bundles, no invite, no plaintext,
// in raw, hex, base32 or base64 form. No entry stored in one user's
// mailbox carries the other's mailbox address, and no stored record or
// log line names both mailboxes.
//
// The client has one mailbox per user and no rotation (SPEC.md §2 allows
// several; client does not implement it): what is tested of "two
// mailboxes of one user are not linkable" is that a mailbox is not linkable
// to its owner's identity or bundle (the one-time prekeys relays hold are
// signed by the mailbox key, and no identity or bundle material is in
// their data), that no relay record or log line joins two mailboxes or a
// client's peer ID and a mailbox, and that a client's libp2p peer ID
// changes with every start. (That relays can link a sender's and a
// recipient's mailbox through the sender's peer ID is
// TestKnownBugCuriousRelayLinksMailboxes.)
func TestPrivacyRelaysKeepNoSecrets(t *testing.T) {
	logs := make([]*entryLog, 3)
	for i := range logs {
		logs[i] = &entryLog{}
	}
	n := StartNet(t, NetOptions{Relays: 3, Clients: 2, CaptureLogs: true, RelayConfig: func(i int, c *relay.Config) {
		c.Forwarder = logs[i]
	}})
	alice, bob := n.Clients[0], n.Clients[1]
	sa, sb := clientSecrets(t, alice, "alice"), clientSecrets(t, bob, "bob")
	aliceCfg, bobCfg := n.ClientConfigs[0], n.ClientConfigs[1]

	// Bob's one-time prekeys are at his relays before alice writes.
	eventually(t, "bob's prekeys at every relay", func() error {
		for _, r := range n.Relays {
			if prekeyCount(t, r, bob.Mailbox()) == 0 {
				return errNotYet
			}
		}
		return nil
	})
	before := 0
	for _, r := range n.Relays {
		before += prekeyCount(t, r, bob.Mailbox())
	}
	bobAtAlice, aliceAtBob := introduce(t, alice, bob)
	toBob := []string{"PLAINTEXT-CANARY-1 the eagle lands at dawn", "PLAINTEXT-CANARY-2 bring the blue folder", "PLAINTEXT-CANARY-3 ok"}
	toAlice := []string{"PLAINTEXT-CANARY-4 copy that", "PLAINTEXT-CANARY-5 folder is blue", "PLAINTEXT-CANARY-6 bye"}
	idsA := send(t, alice, bobAtAlice, toBob[0])
	waitHistory(t, bob, aliceAtBob, client.Incoming, toBob[:1])
	idsB := send(t, bob, aliceAtBob, toAlice...)
	idsA = append(idsA, send(t, alice, bobAtAlice, toBob[1:]...)...)
	waitHistory(t, bob, aliceAtBob, client.Incoming, toBob)
	waitHistory(t, alice, bobAtAlice, client.Incoming, toAlice)
	eventually(t, "delivery receipts both ways", func() error {
		for _, id := range idsA {
			if st := status(t, alice, id); st != client.StatusDelivered {
				return fmt.Errorf("alice's %s: %v", id, st)
			}
		}
		for _, id := range idsB {
			if st := status(t, bob, id); st != client.StatusDelivered {
				return fmt.Errorf("bob's %s: %v", id, st)
			}
		}
		return nil
	})
	after := 0
	for _, r := range n.Relays {
		after += prekeyCount(t, r, bob.Mailbox())
	}
	if after >= before {
		t.Fatalf("no one-time prekey of bob's was fetched (%d before, %d after)", before, after)
	}
	amb, bmb := alice.Mailbox(), bob.Mailbox()
	peerA := alice.PeerID()

	// The entries each relay stored.
	var entries []store.StoredEntry
	for _, l := range logs {
		entries = append(entries, l.all()...)
	}
	if len(entries) == 0 {
		t.Fatal("no entry stored")
	}
	mbForms := func(mb wire.Mailbox, name string) []needle {
		d := mb[2:]
		return []needle{{name + " mailbox", mb[:]}, {name + " mailbox digest", d}}
	}
	for _, e := range entries {
		env, err := wire.ParseEnvelope(e.Envelope)
		if err != nil {
			t.Fatal(err)
		}
		other := mbForms(amb, "alice")
		if env.Mailbox == amb {
			other = mbForms(bmb, "bob")
		}
		stamp, err := e.Stamp.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		c := corpus{"envelope": e.Envelope, "stamp": stamp}
		if hits := c.find(other); len(hits) > 0 {
			t.Errorf("an entry of mailbox %s carries the other mailbox: %v", env.Mailbox, hits)
		}
	}

	// Close everything; read the clients' private keys; scan the relays.
	for _, c := range n.Clients {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.StopRelays(); err != nil {
		t.Fatal(err)
	}
	priv := append(privateSecrets(t, aliceCfg, "alice"), privateSecrets(t, bobCfg, "bob")...)
	var plain []needle
	for _, s := range append(slices.Clone(toBob), toAlice...) {
		plain = append(plain, needle{"plaintext " + s[:18], []byte(s)})
	}
	all := slices.Concat(sa.public, sb.public, priv, plain)
	total := 0
	for i, r := range n.Relays {
		c := relayCorpus(t, r.Config().DataDir)
		c["log"] = n.Logs[i].Bytes()
		if len(c["log"]) == 0 {
			t.Fatalf("relay %d logged nothing", i)
		}
		for k, v := range c {
			total += len(v)
			// No record or log line names both mailboxes.
			if k == "log" {
				for _, line := range bytes.Split(v, []byte("\n")) {
					if bytes.Contains(line, []byte(amb.String())) && bytes.Contains(line, []byte(bmb.String())) {
						t.Errorf("relay %d log line names both mailboxes: %s", i, line)
					}
				}
				continue
			}
			if strings.HasPrefix(k, "kv ") && bytes.Contains(v, amb[:]) && bytes.Contains(v, bmb[:]) {
				t.Errorf("relay %d: a store record names both mailboxes (%s)", i, k)
			}
		}
		if hits := c.find(all); len(hits) > 0 {
			t.Errorf("relay %d keeps secrets: %s", i, strings.Join(hits, "; "))
		}
		// Positive controls: the scan does find what relays must keep.
		if hits := c.find([]needle{{"bob's mailbox", bmb[:]}}); len(hits) == 0 {
			t.Errorf("relay %d: the scan does not even find bob's mailbox address", i)
		}
		if !bytes.Contains(c["log"], []byte(r.ID().String())) {
			t.Errorf("relay %d: its log does not name the relay", i)
		}
		// A mailbox's data at a relay is not linked to its owner's other
		// keys: the relay logged no client peer ID next to a mailbox.
		for _, line := range bytes.Split(c["log"], []byte("\n")) {
			if bytes.Contains(line, []byte(peerA.String())) && (bytes.Contains(line, []byte(amb.String())) || bytes.Contains(line, []byte(bmb.String()))) {
				t.Errorf("relay %d log line links a client's peer ID to a mailbox: %s", i, line)
			}
		}
	}
	t.Logf("scanned %d KiB of relay files, store records and logs for %d secrets in %d encodings each", total>>10, len(all), len(encodings(needle{})))

	// A new run of a client has a new libp2p identity: relays cannot
	// link its sessions across runs by peer ID.
	a2, err := client.New(aliceCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	if a2.PeerID() == peerA {
		t.Fatal("alice's peer ID is the same across runs")
	}
	if a2.Mailbox() != amb {
		t.Fatal("alice's mailbox changed across runs")
	}
}
