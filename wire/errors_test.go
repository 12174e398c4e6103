package wire

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-net/cairn/wire/pb"
)

// sentinels names every sentinel error of the package as SPEC.md spells it.
var sentinels = map[string]error{
	"ErrMalformed":          ErrMalformed,
	"ErrUnsupportedVersion": ErrUnsupportedVersion,
	"ErrTooLarge":           ErrTooLarge,
	"ErrExpiryInvalid":      ErrExpiryInvalid,
	"ErrPostageRequired":    ErrPostageRequired,
	"ErrMailboxQuota":       ErrMailboxQuota,
	"ErrStorageFull":        ErrStorageFull,
	"ErrRateLimited":        ErrRateLimited,
	"ErrAuthFailed":         ErrAuthFailed,
	"ErrAuthStale":          ErrAuthStale,
	"ErrAuthReplayed":       ErrAuthReplayed,
	"ErrNotReplica":         ErrNotReplica,
	"ErrSlowConsumer":       ErrSlowConsumer,
	"ErrBusy":               ErrBusy,
	"ErrShuttingDown":       ErrShuttingDown,
	"ErrBadSignature":       ErrBadSignature,
	"ErrInternal":           ErrInternal,
	"ErrInviteChecksum":     ErrInviteChecksum,
}

func TestStatusEveryCode(t *testing.T) {
	seen := map[error]pb.Status{}
	for code := range pb.Status_name {
		s := pb.Status(code)
		err := StatusError(s)
		switch s {
		case pb.Status_STATUS_OK:
			if err != nil {
				t.Errorf("OK maps to %v", err)
			}
			if StatusOf(nil) != s {
				t.Errorf("StatusOf(nil) = %v", StatusOf(nil))
			}
			continue
		case pb.Status_STATUS_UNSPECIFIED:
			if err != ErrMalformed {
				t.Errorf("UNSPECIFIED maps to %v, want ErrMalformed", err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%v maps to nil", s)
			continue
		}
		if got := StatusOf(err); got != s {
			t.Errorf("StatusOf(StatusError(%v)) = %v", s, got)
		}
		for _, wrapped := range []error{
			fmt.Errorf("deposit: %w", err),
			fmt.Errorf("relay: %w", fmt.Errorf("store: %w", err)),
			errors.Join(errors.New("context"), err),
		} {
			if got := StatusOf(wrapped); got != s {
				t.Errorf("StatusOf(%q) = %v, want %v", wrapped, got, s)
			}
		}
		if prev, dup := seen[err]; dup {
			t.Errorf("%v and %v map to the same error", prev, s)
		}
		seen[err] = s
	}
	for _, s := range []pb.Status{19, 100, 1 << 30, -1} {
		if err := StatusError(s); err != ErrInternal {
			t.Errorf("unknown status %d maps to %v, want ErrInternal", s, err)
		}
	}
	for _, err := range []error{errors.New("disk on fire"), context.Canceled, fmt.Errorf("x: %w", context.DeadlineExceeded)} {
		if got := StatusOf(err); got != pb.Status_STATUS_INTERNAL {
			t.Errorf("StatusOf(%v) = %v, want INTERNAL", err, got)
		}
	}
}

// TestStatusMatchesSpec checks SPEC.md §11's table row by row: the code,
// the protobuf name and the Go sentinel.
func TestStatusMatchesSpec(t *testing.T) {
	spec := readSpecSection(t, "## 11. Status codes", "## 12.")
	row := regexp.MustCompile("^\\| (\\d+) \\| `([A-Z_]+)` \\| (?:`(Err[A-Za-z]+)`|nil) \\|")
	rows := 0
	for l := range strings.SplitSeq(spec, "\n") {
		m := row.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		rows++
		code, _ := strconv.Atoi(m[1])
		if got := pb.Status_name[int32(code)]; got != "STATUS_"+m[2] {
			t.Errorf("code %d is %s in the .proto, %s in SPEC.md", code, got, m[2])
		}
		var want error
		if m[3] != "" {
			want = sentinels[m[3]]
			if want == nil {
				t.Errorf("SPEC.md names an unknown sentinel %s", m[3])
			}
		}
		if got := StatusError(pb.Status(code)); got != want {
			t.Errorf("StatusError(%s) = %v, SPEC.md says %s", m[2], got, m[3])
		}
	}
	if rows != len(pb.Status_name) {
		t.Errorf("SPEC.md §11 lists %d codes, the .proto %d", rows, len(pb.Status_name))
	}
}

func readSpecSection(t *testing.T, start, end string) string {
	t.Helper()
	b, err := os.ReadFile("../SPEC.md")
	if err != nil {
		t.Fatalf("SPEC.md: %v", err)
	}
	s := string(b)
	i := strings.Index(s, start)
	if i < 0 {
		t.Fatalf("SPEC.md has no %q", start)
	}
	s = s[i:]
	if j := strings.Index(s[len(start):], end); j >= 0 {
		s = s[:len(start)+j]
	}
	return s
}

// TestWireLimitsMatchSpec checks the protocol limits table of SPEC.md §12
// against the constants of limits.go.
func TestWireLimitsMatchSpec(t *testing.T) {
	spec := readSpecSection(t, "## 12. Limits and defaults", "Relay policy")
	consts := map[string]int64{
		"MaxCiphertext":          MaxCiphertext,
		"EnvelopeOverhead":       EnvelopeOverhead,
		"MaxReceiptBatch":        MaxReceiptBatch,
		"MaxCursorOrigins":       MaxCursorOrigins,
		"MaxControlFrame":        MaxControlFrame,
		"MaxEntryFrame":          MaxEntryFrame,
		"MaxDepositFrame":        MaxDepositFrame,
		"MaxDepositInflight":     MaxDepositInflight,
		"MaxAckCIDs":             MaxAckCIDs,
		"MaxOwnerAckLen":         MaxOwnerAckLen,
		"MaxStatusCIDs":          MaxStatusCIDs,
		"MaxPrekeyUpload":        MaxPrekeyUpload,
		"MaxReplicateBatch":      MaxReplicateBatch,
		"MaxReplicateInflight":   MaxReplicateInflight,
		"MaxReplicateTombstones": MaxReplicateTombstones,
		"AuthWindow":             int64(AuthWindow.Seconds()),
		"MaxPostageDifficulty":   MaxPostageDifficulty,
	}
	row := regexp.MustCompile("^\\| `([A-Za-z]+)` \\| ([0-9,]+) ")
	for l := range strings.SplitSeq(spec, "\n") {
		m := row.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		v, err := strconv.ParseInt(strings.ReplaceAll(m[2], ",", ""), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		c, ok := consts[m[1]]
		if !ok {
			t.Errorf("SPEC.md §12 lists %s, which limits.go does not define", m[1])
			continue
		}
		if c != v {
			t.Errorf("%s = %d, SPEC.md §12 says %d", m[1], c, v)
		}
		delete(consts, m[1])
	}
	for name := range consts {
		t.Errorf("%s is not in SPEC.md §12", name)
	}
	// Bounds stated elsewhere in the spec.
	for _, tt := range []struct {
		name      string
		got, want int
	}{
		{"MaxEnvelope (§3)", MaxEnvelope, 55 + 262144},
		{"MaxPeerIDLen (§6.1, §7, §8)", MaxPeerIDLen, 64},
		{"MaxInviteBundle (§9)", MaxInviteBundle, 4096},
		{"MaxInviteName (§9)", MaxInviteName, 64},
		{"MaxInviteHints (§9)", MaxInviteHints, 8},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}

func TestWireLabelsAndProtocols(t *testing.T) {
	for label, want := range map[string]string{
		LabelReceipt:     "cairn/v1/receipt",
		LabelAck:         "cairn/v1/ack",
		LabelAuth:        "cairn/v1/auth",
		LabelPostage:     "cairn/v1/postage",
		LabelInvite:      "cairn/v1/invite",
		LabelFingerprint: "cairn/v1/fp",
		LabelSummary:     "cairn/v1/summary",
	} {
		if label != want {
			t.Errorf("label %q, SPEC.md says %q", label, want)
		}
		if got := labelled(label); string(got) != want+"\x00" {
			t.Errorf("labelled(%q) = %q", label, got)
		}
	}
	for id, name := range map[string]string{
		string(ProtocolInfo): "info", string(ProtocolDeposit): "deposit", string(ProtocolSync): "sync",
		string(ProtocolSubscribe): "subscribe", string(ProtocolAck): "ack", string(ProtocolStatus): "status",
		string(ProtocolPrekeys): "prekeys", string(ProtocolReplicate): "replicate", string(ProtocolReconcile): "reconcile",
	} {
		if id != "/cairn/"+name+"/1.0.0" {
			t.Errorf("protocol ID %s, SPEC.md §10 says /cairn/%s/1.0.0", id, name)
		}
	}
	if DHTPrefix != "/cairn" {
		t.Errorf("DHTPrefix %s", DHTPrefix)
	}
}

func TestWireMailbox(t *testing.T) {
	m := MailboxOf(mailboxPub)
	if want := cat(unhex("1220"), sha(mailboxPub)); string(m[:]) != string(want) {
		t.Fatalf("MailboxOf = %x, SPEC.md §2 says %x", m, want)
	}
	if m.DHTKey() != string(m[:]) || m.String() != fmt.Sprintf("%x", m[:]) || m.IsZero() || !(Mailbox{}).IsZero() {
		t.Fatal("DHTKey, String or IsZero")
	}
	if got, err := ParseMailboxHex(m.String()); err != nil || got != m {
		t.Fatalf("ParseMailboxHex(String()) = %v, %v", got, err)
	}
	if got, err := ParseMailbox(m[:]); err != nil || got != m {
		t.Fatalf("ParseMailbox = %v, %v", got, err)
	}
	for _, tt := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", m[:33]},
		{"long", append(m[:], 0)},
		{"sha2-512 code", cat(unhex("1320"), m[2:])},
		{"length 31", cat(unhex("121f"), m[2:])},
		{"zero", make([]byte, 34)},
	} {
		_, err := ParseMailbox(tt.b)
		wantErr(t, err, ErrMalformed, "ParseMailbox %s", tt.name)
	}
	for _, s := range []string{"", "zz", m.String()[:66], m.String() + "00", "1320" + m.String()[4:]} {
		_, err := ParseMailboxHex(s)
		wantErr(t, err, ErrMalformed, "ParseMailboxHex(%q)", s)
	}
}
