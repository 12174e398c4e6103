package ratchet

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"strconv"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the known-answer vectors and fuzz seeds in testdata/")

const katFile = "testdata/vectors-v1.json"

// katFileFormat is the known-answer vector file. Each step is one
// operation of one party; "rand" is every byte the operation reads from its
// random source, in order (SPEC.md §15.11 gives the order), so another
// implementation can replay it; "in" are its other inputs and "out" what it
// must produce. Messages are numbered by the encrypt steps that made them.
type katFileFormat struct {
	Description string    `json:"description"`
	Steps       []katStep `json:"steps"`
}

type katStep struct {
	Op    string            `json:"op"`
	Party string            `json:"party"`
	In    map[string]string `json:"in,omitempty"`
	Rand  string            `json:"rand"`
	Out   map[string]string `json:"out"`
}

// katScript is the scenario written to the vector file by -update: a
// handshake with both one-time prekeys whose first message arrives second,
// a reply (DH step), an out-of-order burst, a replay, and the final states.
func katScript() []katStep {
	pt := func(s string) map[string]string { return map[string]string{"plaintext": hex.EncodeToString([]byte(s))} }
	msg := func(i int) map[string]string { return map[string]string{"message": strconv.Itoa(i)} }
	return []katStep{
		{Op: "identity", Party: "alice"},
		{Op: "identity", Party: "bob"},
		{Op: "prekeys", Party: "bob", In: map[string]string{"prekey_signer_seed": hex.EncodeToString(bytes.Repeat([]byte{0x42}, 32))}},
		{Op: "one_time_prekey", Party: "bob", In: map[string]string{"kind": "X25519"}},
		{Op: "one_time_prekey", Party: "bob", In: map[string]string{"kind": "ML-KEM-768"}},
		{Op: "initiate", Party: "alice", In: map[string]string{"peer": "bob", "one_time_x25519": "3", "one_time_mlkem768": "4"}},
		{Op: "encrypt", Party: "alice", In: pt("first message")},
		{Op: "encrypt", Party: "alice", In: pt("second message")},
		{Op: "respond", Party: "bob", In: msg(1)},
		{Op: "decrypt", Party: "bob", In: msg(0)},
		{Op: "encrypt", Party: "bob", In: pt("a reply")},
		{Op: "decrypt", Party: "alice", In: msg(2)},
		{Op: "encrypt", Party: "alice", In: pt("three")},
		{Op: "encrypt", Party: "alice", In: pt("four")},
		{Op: "encrypt", Party: "alice", In: pt("five")},
		{Op: "decrypt", Party: "bob", In: msg(5)},
		{Op: "decrypt", Party: "bob", In: msg(3)},
		{Op: "decrypt", Party: "bob", In: msg(3)},
		{Op: "decrypt", Party: "bob", In: msg(4)},
		{Op: "encrypt", Party: "bob", In: pt("six")},
		{Op: "decrypt", Party: "alice", In: msg(6)},
		{Op: "state", Party: "alice"},
		{Op: "state", Party: "bob"},
	}
}

// replayReader serves exactly the bytes of one step.
type replayReader struct{ b []byte }

func (r *replayReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// recordReader records what it serves from a deterministic source.
type recordReader struct {
	src io.Reader
	got []byte
}

func (r *recordReader) Read(p []byte) (int, error) {
	n, err := r.src.Read(p)
	r.got = append(r.got, p[:n]...)
	return n, err
}

type katWorld struct {
	ids      map[string]*Identity
	keys     map[string]*PrivateKeys
	sessions map[string]*Session
	otps     map[uint32]*OneTimePrekey
	messages [][]byte
}

func (w *katWorld) run(t *testing.T, st *katStep, rand io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	h := hex.EncodeToString
	in := func(k string) []byte {
		b, err := hex.DecodeString(st.In[k])
		if err != nil {
			t.Fatalf("%s: in.%s: %v", st.Op, k, err)
		}
		return b
	}
	index := func() int {
		i, err := strconv.Atoi(st.In["message"])
		if err != nil || i < 0 || i >= len(w.messages) {
			t.Fatalf("%s: bad message index %q", st.Op, st.In["message"])
		}
		return i
	}
	switch st.Op {
	case "identity":
		id, err := GenerateIdentity(rand)
		if err != nil {
			t.Fatal(err)
		}
		w.ids[st.Party] = id
		out["ed25519"], out["x25519"] = h(id.pub.Ed25519[:]), h(id.pub.X25519[:])
	case "prekeys":
		signer := ed25519.NewKeyFromSeed(in("prekey_signer_seed"))
		k, err := NewPrivateKeys(rand, w.ids[st.Party], signer.Public().(ed25519.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		w.keys[st.Party] = k
		out["bundle"] = h(k.Bundle().Marshal())
	case "one_time_prekey":
		kind := map[string]PrekeyKind{"X25519": KindX25519, "ML-KEM-768": KindMLKEM768}[st.In["kind"]]
		signer := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x42}, 32))
		ps, err := w.keys[st.Party].GenerateOneTimePrekeys(rand, kind, 1, signer)
		if err != nil {
			t.Fatal(err)
		}
		w.otps[ps[0].ID] = ps[0]
		out["prekey"] = h(ps[0].Marshal())
	case "initiate":
		var dh, kem *OneTimePrekey
		if v, err := strconv.Atoi(st.In["one_time_x25519"]); err == nil {
			dh = w.otps[uint32(v)]
		}
		if v, err := strconv.Atoi(st.In["one_time_mlkem768"]); err == nil {
			kem = w.otps[uint32(v)]
		}
		s, err := initiate(rand, w.ids[st.Party], w.keys[st.In["peer"]].Bundle(), dh, kem, detEncapsulate, initiateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w.sessions[st.Party] = s
		out["handshake_id"], out["session_ad"] = h(s.id[:]), h(s.ad[:])
	case "encrypt":
		m, err := w.sessions[st.Party].Encrypt(rand, in("plaintext"))
		if err != nil {
			t.Fatal(err)
		}
		out["message"] = h(m)
		out["index"] = strconv.Itoa(len(w.messages))
		w.messages = append(w.messages, m)
	case "respond":
		s, pt, err := w.keys[st.Party].Respond(rand, w.messages[index()])
		if err != nil {
			t.Fatal(err)
		}
		w.sessions[st.Party] = s
		out["plaintext"], out["handshake_id"], out["session_ad"] = h(pt), h(s.id[:]), h(s.ad[:])
	case "decrypt":
		pt, err := w.sessions[st.Party].Decrypt(rand, w.messages[index()])
		switch {
		case errors.Is(err, ErrDuplicate):
			out["error"] = "duplicate"
		case err != nil:
			t.Fatal(err)
		default:
			out["plaintext"] = h(pt)
		}
	case "state":
		out["session"] = h(mustMarshal(t, w.sessions[st.Party]))
	default:
		t.Fatalf("unknown op %q", st.Op)
	}
	return out
}

// TestVectors replays testdata/vectors-v1.json: every output, byte for byte.
// With -update it regenerates the file from katScript.
func TestVectors(t *testing.T) {
	w := &katWorld{ids: map[string]*Identity{}, keys: map[string]*PrivateKeys{},
		sessions: map[string]*Session{}, otps: map[uint32]*OneTimePrekey{}}
	if *update {
		f := katFileFormat{
			Description: "cairn ratchet v1 known-answer vectors (SPEC.md §15). Replay the steps in order; " +
				"'rand' is every byte the step reads from its random source, in the order of SPEC.md §15.11; " +
				"messages are numbered by the encrypt steps that made them.",
			Steps: katScript(),
		}
		src := testRand(0xCA)
		for i := range f.Steps {
			st := &f.Steps[i]
			rec := &recordReader{src: src}
			st.Out = w.run(t, st, rec)
			st.Rand = hex.EncodeToString(rec.got)
		}
		b, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(katFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(katFile)
	if err != nil {
		t.Fatal(err)
	}
	var f katFileFormat
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Steps) == 0 {
		t.Fatal("no steps")
	}
	for i := range f.Steps {
		st := &f.Steps[i]
		r, err := hex.DecodeString(st.Rand)
		if err != nil {
			t.Fatal(err)
		}
		rr := &replayReader{b: r}
		got := w.run(t, st, rr)
		if len(rr.b) != 0 {
			t.Errorf("step %d (%s %s): %d random bytes unread", i, st.Party, st.Op, len(rr.b))
		}
		if !maps.Equal(got, st.Out) {
			for k := range st.Out {
				if got[k] != st.Out[k] {
					t.Errorf("step %d (%s %s): %s = %s, want %s", i, st.Party, st.Op, k, short(got[k]), short(st.Out[k]))
				}
			}
			t.FailNow()
		}
	}
}

func short(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%s…(%d)", s[:40], len(s))
	}
	return s
}
