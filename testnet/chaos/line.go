package chaos

import (
	"fmt"
	"strconv"
	"strings"
)

// Line is one JSON line a chaos client ('cairn testnet chaos-client')
// prints on stdout. Ev says which fields are set:
//
//	peer     Peer, SenderPeer: the libp2p peer IDs of this run, its own
//	         mailbox's and its deposits' (before it goes online)
//	sent     Contact, N, Counter: a message is in the outbox
//	status   Contact, Counter, Status: a sent message's new status
//	recv     Contact, N, Counter, Seq, Late: a message was received
//	gap      Contact, From, To: counters reported missing (GapDetected)
//	dropped  Count: events the client's channel dropped
//	state    State: what the client's store holds, every second
//	quiet    the client stopped sending ("quiet" on its stdin)
//	exit     after Flush, on SIGTERM
//	error    Err
//
// Contact is the other side's name ("client-N"). The driver keeps the
// lines in the client's events.jsonl; faults.log has the faults with the
// same clock (its first line gives the start).
type Line struct {
	Ev string `json:"ev"`
	// Time is the client's clock when it printed the line (RFC 3339),
	// to set it against the faults.
	Time string `json:"time,omitempty"`
	Peer string `json:"peer,omitempty"`
	// SenderPeer is client.Client.SenderPeerID (Ev peer).
	SenderPeer string `json:"sender_peer,omitempty"`
	Contact    string `json:"contact,omitempty"`
	N          uint64 `json:"n,omitempty"`
	Counter    uint64 `json:"counter,omitempty"`
	Seq        uint64 `json:"seq,omitempty"`
	Late       bool   `json:"late,omitempty"`
	Status     string `json:"status,omitempty"`
	From       uint64 `json:"from,omitempty"`
	To         uint64 `json:"to,omitempty"`
	Count      int    `json:"count,omitempty"`
	State      *State `json:"state,omitempty"`
	Err        string `json:"err,omitempty"`
}

// State is a client's store in figures, per contact name.
type State struct {
	// Pending is client.Client.Pending: outbox entries not yet stored.
	Pending int `json:"pending"`
	// Sent counts outgoing messages, Stored those with a relay receipt
	// (stored or delivered), Receipts those delivered, Received the
	// incoming ones.
	Sent     map[string]int `json:"sent"`
	Stored   map[string]int `json:"stored"`
	Receipts map[string]int `json:"receipts"`
	Received map[string]int `json:"received"`
}

// ClientName is the name of client i: its display name, its contacts'
// name for it, and its name in the deny file.
func ClientName(i int) string { return fmt.Sprintf("client-%d", i) }

// Body is the text of message n from one client to another.
func Body(from, to string, n uint64) string { return fmt.Sprintf("chaos %s %s %d", from, to, n) }

// ParseBody reads a Body.
func ParseBody(b []byte) (from, to string, n uint64, ok bool) {
	f := strings.Fields(string(b))
	if len(f) != 4 || f[0] != "chaos" {
		return "", "", 0, false
	}
	n, err := strconv.ParseUint(f[3], 10, 64)
	if err != nil || n == 0 {
		return "", "", 0, false
	}
	return f[1], f[2], n, true
}
