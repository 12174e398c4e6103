package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/wire"
)

// clientFlags are the flags of the client commands.
type clientFlags struct {
	home    string
	relays  []string
	timeout time.Duration
	json    bool
}

const homeHelp = `The home directory (--home, default $CAIRN_HOME or the user's config directory
+ /cairn) holds one user: the identity, contacts, sessions, the outbox and the
received messages, in a database encrypted at rest with the key in <home>/key.`

func (f *clientFlags) addHome(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.home, "home", defaultHome(), "home directory of the user's state")
}

func (f *clientFlags) addRelays(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.relays, "relay", nil, "bootstrap relay, a multiaddr with /p2p/<peer ID>; repeatable (default: the home's config.json)")
}

func (f *clientFlags) addTimeout(cmd *cobra.Command, def time.Duration, what string) {
	cmd.Flags().DurationVar(&f.timeout, "timeout", def, what)
}

func (f *clientFlags) addJSON(cmd *cobra.Command, what string) {
	cmd.Flags().BoolVar(&f.json, "json", false, what)
}

// session is an opened home and its client, online or not.
type session struct {
	a      *app
	h      *home
	c      *client.Client
	log    *slog.Logger
	online bool
	// seenIn is the number of incoming messages when the session opened.
	seenIn int
}

// open opens the home's client; online starts it (it connects to the
// relays in the background).
func (a *app) open(ctx context.Context, f *clientFlags, online bool) (*session, error) {
	log, err := a.logger(slog.LevelWarn)
	if err != nil {
		return nil, err
	}
	h, err := openHome(f.home)
	if err != nil {
		return nil, err
	}
	relays := h.relays(f.relays)
	c, err := h.openClient(relays, log)
	if err != nil {
		return nil, err
	}
	s := &session{a: a, h: h, c: c, log: log}
	s.seenIn = len(s.messages(client.Incoming))
	if online {
		if len(relays) == 0 {
			c.Close()
			return nil, usageErrorf("no relay to connect to: pass --relay ADDR, or set relays in %s/%s", h.dir, homeConfigFile)
		}
		if err := c.Start(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("start: %w", err)
		}
		s.online = true
	}
	return s, nil
}

func (s *session) close() {
	if err := s.c.Close(); err != nil {
		s.log.Warn("close", "err", err)
	}
}

// messages returns every message of one direction (0: both) in the order
// this home stored them, each conversation keeping its own order (by the
// sender's counter, SPEC.md §17.5).
func (s *session) messages(dir client.Direction) []client.Message {
	var convs [][]client.Message
	for _, ct := range s.c.Contacts() {
		h, err := s.c.History(ct.ID)
		if err != nil {
			continue
		}
		var conv []client.Message
		for _, m := range h {
			if dir == 0 || m.Direction == dir {
				conv = append(conv, m)
			}
		}
		convs = append(convs, conv)
	}
	return mergeConversations(convs)
}

// mergeConversations merges conversations into one list: it takes, each
// time, the first remaining message of the conversation whose first
// remaining message was stored first (client.Message.Seq), so the order
// across conversations is the order of arrival while each conversation
// keeps its own (a message held back by a gap has an earlier Seq than the
// one it waited for, and stays after it).
func mergeConversations(convs [][]client.Message) []client.Message {
	n := 0
	for _, c := range convs {
		n += len(c)
	}
	out := make([]client.Message, 0, n)
	for len(out) < n {
		best := -1
		for i, c := range convs {
			if len(c) > 0 && (best < 0 || c[0].Seq < convs[best][0].Seq) {
				best = i
			}
		}
		out = append(out, convs[best][0])
		convs[best] = convs[best][1:]
	}
	return out
}

// flush waits, at most until ctx ends, until the entries queued in the
// outbox — sent messages and the delivery receipts of what this session
// received — are stored at a relay (client.Flush). Whatever has not left
// by then stays in the outbox and goes out with the next online command.
// It reports whether nothing is left.
func (s *session) flush(ctx context.Context) bool {
	err := s.c.Flush(ctx)
	if err != nil {
		s.log.Debug("flush", "err", err)
	}
	return err == nil
}

// sync syncs every replica of the mailbox (the client waits until it is
// online and asks the DHT for the replica set).
func (s *session) sync(ctx context.Context) error {
	if isTerminal(s.a.stderr) {
		// Show the count of messages received, live.
		prog := newProgress(s.a.stderr, "received", 0)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if n := len(s.messages(client.Incoming)) - s.seenIn; n > 0 {
						prog.set(n)
					}
				}
			}
		}()
		defer func() { close(stop); <-done; prog.done() }()
	}
	t0 := time.Now()
	err := s.c.Sync(ctx)
	s.log.Debug("sync round", "took", time.Since(t0), "err", err)
	if err != nil {
		if errors.Is(err, client.ErrNoRelay) || ctx.Err() != nil {
			return offlineErrorf("sync: no relay of your mailbox could be reached")
		}
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// ---- init

func (a *app) initCmd() *cobra.Command {
	var f clientFlags
	var name string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a user: identity, home directory and at-rest key",
		Long: `Create a user in a new home directory: an identity key, a mailbox key and signed
prekeys (in the database), a random 32-byte at-rest encryption key (<home>/key,
mode 0600) and config.json with the display name and bootstrap relays.

` + homeHelp + `

What the at-rest key protects: the database files on their own — a copy of
<home>/db (a backup, a synced folder, a disk image taken without the key file)
reveals nothing: not the identity keys, not the contacts, not the messages.
What it does not protect: anyone who can read the home directory as a whole
(your user account, root, malware running as you, a backup of the whole home)
has the key next to the database. To keep them apart, keep the home on an
encrypted volume, or move <home>/key elsewhere and copy it back before use.
Losing the key loses the database.

init does not touch the network.`,
		Example: `  cairn init --name alice --relay /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
  cairn init --home ./bob --name bob --relay "$RELAY"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, r := range f.relays {
				if _, err := parseRelayAddr(r); err != nil {
					return usageErrorf("init: --relay: %v", err)
				}
			}
			log, err := a.logger(slog.LevelWarn)
			if err != nil {
				return err
			}
			h, err := initHome(f.home, homeConfig{Name: name, Relays: f.relays})
			if err != nil {
				return err
			}
			c, err := h.openClient(h.cfg.Relays, log)
			if err != nil {
				return err
			}
			defer c.Close()
			fmt.Fprintf(a.stdout, "home %s\n", h.dir)
			fmt.Fprintf(a.stdout, "fingerprint %s\n", client.Contact{Identity: c.Identity()}.Fingerprint())
			if len(h.cfg.Relays) == 0 {
				fmt.Fprintf(a.stderr, "note: no relay configured: pass --relay to online commands, or add relays to %s/%s\n", h.dir, homeConfigFile)
			}
			return nil
		},
	}
	f.addHome(cmd)
	f.addRelays(cmd)
	cmd.Flags().StringVar(&name, "name", "", "display name suggested to contacts in your invites")
	return cmd
}

// ---- invite

func (a *app) inviteCmd() *cobra.Command {
	var f clientFlags
	var qr bool
	cmd := &cobra.Command{
		Use:   "invite",
		Short: "Print your invite, to hand to a contact out of band",
		Long: `Print this user's invite: a "cairn1..." string carrying the public identity,
prekeys, mailbox address, display name and up to 8 bootstrap relays. Give it to
a contact out of band (a message, a link, a QR code); they run
'cairn contact add NAME INVITE'. An invite holds no secret, but whoever has it
can write to you: share it with the people you want to hear from.

--qr prints the QR-friendly form: the same invite in uppercase, every character
in the QR alphanumeric set (a typical invite fits a version-40 code at level M).
Both forms are accepted by 'contact add'. invite does not touch the network.`,
		Example: `  cairn invite > my-invite.txt
  cairn invite --qr | qrencode -o invite.png   # any QR encoder`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.open(cmd.Context(), &f, false)
			if err != nil {
				return err
			}
			defer s.close()
			var inv string
			if qr {
				inv, err = s.c.InviteQR()
			} else {
				inv, err = s.c.Invite()
			}
			if err != nil {
				return fmt.Errorf("invite: %w", err)
			}
			fmt.Fprintln(a.stdout, inv)
			return nil
		},
	}
	f.addHome(cmd)
	f.addRelays(cmd)
	cmd.Flags().BoolVar(&qr, "qr", false, "print the QR-friendly form (uppercase, QR alphanumeric)")
	return cmd
}

// ---- contact add, contacts

var nameRE = regexp.MustCompile(`^[\p{L}\p{N}][\p{L}\p{N}._@+-]{0,63}$`)

func (a *app) contactCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "contact",
		Short: "Manage contacts (add)",
		Long:  `Manage contacts. See 'cairn contact add --help'; 'cairn contacts' lists them.`,
		Example: `  cairn contact add bob cairn1qy...
  cairn contacts`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	var f clientFlags
	add := &cobra.Command{
		Use:   "add NAME [INVITE|-]",
		Short: "Add a contact from their invite",
		Long: `Add a contact from their invite and give them a local NAME (letters, digits and
._@+-, up to 64 characters). The invite is the second argument, or read from
stdin when it is "-" or absent; whitespace and line breaks in it are ignored
and case does not matter, so the QR form works too. Adding a known contact again
refreshes their invite and renames them.

Compare the printed fingerprint with the one your contact sees ('cairn contacts'
on their side shows yours) over a channel you trust to be sure the invite was
not swapped. contact add does not touch the network.

A bad invite is refused with a one-line error and exit code 3.`,
		Example: `  cairn contact add bob cairn1qy...
  cairn contact add bob - < bob-invite.txt`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageErrorf("contact add needs NAME and INVITE (or the invite on stdin), got %d argument(s) (see 'cairn contact add --help')", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !nameRE.MatchString(name) {
				return usageErrorf("contact add: name %q: use letters, digits and ._@+- (up to 64, starting with a letter or digit)", name)
			}
			var inv string
			if len(args) == 2 && args[1] != "-" {
				inv = args[1]
			} else {
				b, err := io.ReadAll(io.LimitReader(a.stdin, 64<<10))
				if err != nil {
					return fmt.Errorf("contact add: read invite: %w", err)
				}
				inv = string(b)
			}
			if strings.TrimSpace(inv) == "" {
				return inputErrorf("contact add: no invite given")
			}
			s, err := a.open(cmd.Context(), &f, false)
			if err != nil {
				return err
			}
			defer s.close()
			ct, err := s.c.AcceptInvite(inv)
			if err != nil {
				return explainInvite(err)
			}
			if other, ok := s.h.names[name]; ok && other != ct.ID {
				return inputErrorf("contact add: the name %q is taken by another contact", name)
			}
			for n, id := range s.h.names {
				if id == ct.ID {
					delete(s.h.names, n)
				}
			}
			s.h.names[name] = ct.ID
			if err := s.h.saveNames(); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "added %s fingerprint %s\n", name, ct.Fingerprint())
			return nil
		},
	}
	f.addHome(add)
	cmd.AddCommand(add)
	return cmd
}

// explainInvite turns AcceptInvite's errors into one line with exit code 3.
func explainInvite(err error) error {
	switch {
	case errors.Is(err, client.ErrSelf):
		return inputErrorf("contact add: that is your own invite")
	case errors.Is(err, wire.ErrInviteChecksum):
		return inputErrorf("contact add: not a valid invite: checksum mismatch (a typo, or a cut-off copy?)")
	case errors.Is(err, wire.ErrUnsupportedVersion):
		return inputErrorf("contact add: the invite is of a newer version than this cairn understands")
	case errors.Is(err, wire.ErrMalformed):
		return inputErrorf("contact add: not a valid invite: %v", trimPrefixes(err))
	}
	return fmt.Errorf("contact add: %w", err)
}

// trimPrefixes drops the package prefixes of a wrapped error ("client:
// invite: …").
func trimPrefixes(err error) string {
	s := err.Error()
	for _, p := range []string{"client: ", "invite bundle: ", "invite: "} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}

type contactJSON struct {
	Name        string `json:"name,omitempty"`
	InviteName  string `json:"invite_name,omitempty"`
	ID          string `json:"id"`
	Fingerprint string `json:"fingerprint"`
	Added       string `json:"added"`
}

func (a *app) contactsCmd() *cobra.Command {
	var f clientFlags
	var self bool
	cmd := &cobra.Command{
		Use:   "contacts",
		Short: "List contacts",
		Long: `List contacts: local name (or [invite name], or the start of the ID for someone
who wrote first without being added), contact ID and fingerprint. Compare
fingerprints out of band to verify a contact. --self prints your own
fingerprint. contacts does not touch the network.`,
		Example: `  cairn contacts
  cairn contacts --json | jq -r '.[].name'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.open(cmd.Context(), &f, false)
			if err != nil {
				return err
			}
			defer s.close()
			if self {
				fmt.Fprintf(a.stdout, "fingerprint %s\n", client.Contact{Identity: s.c.Identity()}.Fingerprint())
				return nil
			}
			cts := s.c.Contacts()
			if f.json {
				out := []contactJSON{}
				for _, ct := range cts {
					j := contactJSON{InviteName: ct.Name, ID: string(ct.ID), Fingerprint: ct.Fingerprint(), Added: ct.AddedAt.UTC().Format(time.RFC3339)}
					if l := s.h.contactLabel(ct); !strings.HasPrefix(l, "[") && l != shortID(ct.ID) {
						j.Name = l
					}
					out = append(out, j)
				}
				return writeJSONOut(a.stdout, out)
			}
			if len(cts) == 0 {
				fmt.Fprintln(a.stderr, "no contacts yet: 'cairn contact add NAME INVITE'")
				return nil
			}
			tw := newTable(a.stdout)
			tw.row("NAME", "ID", "FINGERPRINT")
			for _, ct := range cts {
				tw.row(s.h.contactLabel(ct), string(ct.ID), ct.Fingerprint())
			}
			return tw.flush()
		},
	}
	f.addHome(cmd)
	f.addJSON(cmd, "print a JSON array")
	cmd.Flags().BoolVar(&self, "self", false, "print your own fingerprint")
	return cmd
}

// ---- send

func (a *app) sendCmd() *cobra.Command {
	var f clientFlags
	var noWait bool
	cmd := &cobra.Command{
		Use:   "send NAME [TEXT|-]",
		Short: "Send a message to a contact",
		Long: `Send a text message to a contact (a name from 'contact add', or a contact ID or
its first 6+ characters). The text is the second argument, or stdin when it is
"-" or absent (one trailing newline is dropped). At most ` + strconv.Itoa(client.MaxBody) + ` bytes.

The message is encrypted and written to the durable outbox before anything
touches the network, then deposited at a relay of the contact's mailbox. send
prints the message ID on stdout (for 'cairn status'; --json: an object with
the ID and the status reached) and waits until a relay's
signed receipt says it is stored (--timeout). If no relay takes it in time, the
message stays queued in the outbox — it is not lost — and goes out with the next
online command (send, sync, watch); send then exits with code 4.

` + homeHelp,
		Example: `  cairn send bob "see you at 6"
  echo "from a pipe" | cairn send bob
  id=$(cairn send bob hi) && cairn status --wait delivered "$id"`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageErrorf("send needs NAME and TEXT (quote the text; or give it on stdin), got %d argument(s) (see 'cairn send --help')", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var body []byte
			if len(args) == 2 && args[1] != "-" {
				body = []byte(args[1])
			} else {
				b, err := io.ReadAll(io.LimitReader(a.stdin, int64(client.MaxBody)+2))
				if err != nil {
					return fmt.Errorf("send: read stdin: %w", err)
				}
				body = b
				if n := len(body); n > 0 && body[n-1] == '\n' {
					body = body[:n-1]
				}
			}
			if len(body) == 0 {
				return inputErrorf("send: nothing to send (empty text)")
			}
			if len(body) > client.MaxBody {
				return inputErrorf("send: the text is %d bytes or more; at most %d", len(body), client.MaxBody)
			}
			s, err := a.open(ctx, &f, true)
			if err != nil {
				return err
			}
			defer s.close()
			ct, err := s.h.resolveContact(s.c, args[0])
			if err != nil {
				return err
			}
			// Online first: the first message to a contact fetches its
			// one-time prekeys from the relays of its mailbox.
			start := time.Now()
			wctx, cancel := context.WithTimeout(ctx, min(f.timeout, 10*time.Second))
			if err := s.c.WaitReady(wctx); err != nil {
				s.log.Debug("not online before send", "err", err)
			}
			cancel()
			id, err := s.c.Send(ctx, ct.ID, body)
			if err != nil {
				if errors.Is(err, client.ErrTooLarge) {
					return inputErrorf("send: %v", err)
				}
				return interrupted(ctx, fmt.Errorf("send: %w", err))
			}
			if !f.json {
				fmt.Fprintln(a.stdout, id)
			}
			if noWait {
				if f.json {
					return writeJSONOut(a.stdout, map[string]string{"id": string(id), "status": client.StatusQueued.String()})
				}
				return nil
			}
			wctx, cancel = context.WithTimeout(ctx, f.timeout)
			defer cancel()
			st := waitStatus(wctx, s.c, id, client.StatusStored)
			if f.json {
				if err := writeJSONOut(a.stdout, map[string]string{"id": string(id), "status": st.String()}); err != nil {
					return err
				}
			}
			if st < client.StatusStored || st == client.StatusFailed {
				if ctx.Err() != nil {
					return errInterrupted
				}
				if st == client.StatusFailed {
					return fmt.Errorf("send: the relays refused the message for good (status failed)")
				}
				return offlineErrorf("send: no relay stored the message within %v: it stays queued in the outbox and goes out with the next online command", f.timeout)
			}
			if isTerminal(a.stderr) {
				fmt.Fprintf(a.stderr, "%s to %s in %v\n", st, s.h.contactLabel(ct), time.Since(start).Round(time.Millisecond))
			}
			sctx, cancel2 := context.WithTimeout(ctx, 5*time.Second)
			defer cancel2()
			s.flush(sctx)
			return nil
		},
	}
	f.addHome(cmd)
	f.addRelays(cmd)
	f.addTimeout(cmd, 30*time.Second, "how long to wait for a relay's receipt")
	f.addJSON(cmd, `print {"id": …, "status": …} instead of the bare ID`)
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the message is in the outbox (it may then only go out with the next online command)")
	return cmd
}

// waitStatus polls a message's status until it reaches at least want (in
// the order queued < stored < delivered; expired-undelivered and failed end
// the wait) or ctx ends, and returns the last status seen.
func waitStatus(ctx context.Context, c *client.Client, id client.MessageID, want client.Status) client.Status {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var st client.Status
	for {
		if m, err := c.Message(id); err == nil {
			st = m.Status
		}
		if st >= want || st == client.StatusExpiredUndelivered || st == client.StatusFailed {
			return st
		}
		select {
		case <-ctx.Done():
			return st
		case <-t.C:
		}
	}
}

// ---- sync

func (a *app) syncCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Fetch new messages from the relays and send what is queued",
		Long: `Go online, sync every reachable replica of your mailbox (resuming where the last
sync stopped), store what arrived, and send what is queued in the outbox
(messages and delivery receipts). New messages are printed on stdout like
'cairn inbox' prints them (--json: one JSON object per line).

Exits with code 4 if no relay could be reached (nothing is lost: try again).

` + homeHelp,
		Example: `  cairn sync
  cairn sync --json | jq -r .text`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, err := a.open(ctx, &f, true)
			if err != nil {
				return err
			}
			defer s.close()
			before := map[client.MessageID]bool{}
			for _, m := range s.messages(client.Incoming) {
				before[m.ID] = true
			}
			sctx, cancel := context.WithTimeout(ctx, f.timeout)
			defer cancel()
			if err := s.sync(sctx); err != nil {
				if ctx.Err() != nil {
					return errInterrupted
				}
				return err
			}
			settled := s.flush(sctx)
			var fresh []client.Message
			for _, m := range s.messages(client.Incoming) {
				if !before[m.ID] {
					fresh = append(fresh, m)
				}
			}
			if err := s.printMessages(fresh, f.json, true, false); err != nil {
				return err
			}
			if isTerminal(a.stderr) {
				fmt.Fprintf(a.stderr, "%d new message(s)\n", len(fresh))
			}
			if !settled {
				if ctx.Err() != nil {
					return errInterrupted
				}
				return offlineErrorf("sync: some sent messages are still queued (they go out with the next online command)")
			}
			return nil
		},
	}
	f.addHome(cmd)
	f.addRelays(cmd)
	f.addTimeout(cmd, 30*time.Second, "how long to wait for the relays")
	f.addJSON(cmd, "print new messages as JSON, one object per line")
	return cmd
}

// ---- inbox

type messageJSON struct {
	ID        string `json:"id"`
	Contact   string `json:"contact"`
	Name      string `json:"name"`
	Direction string `json:"direction"`
	Counter   uint64 `json:"counter"`
	Text      string `json:"text"`
	SentAt    string `json:"sent_at"`
	At        string `json:"at"`
	Status    string `json:"status,omitempty"`
	Late      bool   `json:"late,omitempty"`
}

func (s *session) messageJSON(m client.Message, labels map[client.ContactID]string) messageJSON {
	j := messageJSON{
		ID: string(m.ID), Contact: string(m.Contact), Name: labels[m.Contact], Counter: m.Counter,
		Text: string(m.Body), SentAt: m.SentAt.UTC().Format(time.RFC3339Nano), At: m.At.UTC().Format(time.RFC3339Nano), Late: m.Late,
	}
	if m.Direction == client.Incoming {
		j.Direction = "in"
	} else {
		j.Direction = "out"
		j.Status = m.Status.String()
	}
	return j
}

func (s *session) labels() map[client.ContactID]string {
	out := map[client.ContactID]string{}
	for _, ct := range s.c.Contacts() {
		out[ct.ID] = s.h.contactLabel(ct)
	}
	return out
}

// printMessages prints messages as lines ("TIME  from NAME: TEXT"), or as
// JSON (lines, or one array).
func (s *session) printMessages(ms []client.Message, asJSON, jsonLines, long bool) error {
	labels := s.labels()
	w := s.a.stdout
	if asJSON {
		if jsonLines {
			enc := json.NewEncoder(w)
			for _, m := range ms {
				if err := enc.Encode(s.messageJSON(m, labels)); err != nil {
					return err
				}
			}
			return nil
		}
		out := []messageJSON{}
		for _, m := range ms {
			out = append(out, s.messageJSON(m, labels))
		}
		return writeJSONOut(w, out)
	}
	for _, m := range ms {
		fmt.Fprintln(w, formatMessage(m, labels[m.Contact], long))
	}
	return nil
}

// formatMessage is one line: time, who, text (quoted if it has control
// characters), and the status of a sent message.
func formatMessage(m client.Message, label string, long bool) string {
	text := string(m.Body)
	if strings.ContainsFunc(text, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		text = strconv.Quote(text)
	}
	var b strings.Builder
	b.WriteString(m.At.Local().Format("2006-01-02 15:04:05"))
	if m.Direction == client.Incoming {
		fmt.Fprintf(&b, "  from %s: %s", label, text)
		if m.Late {
			b.WriteString("  (late)")
		}
	} else {
		fmt.Fprintf(&b, "  to %s: %s  (%s)", label, text, m.Status)
	}
	if long {
		fmt.Fprintf(&b, "  %s", m.ID)
	}
	return b.String()
}

func (a *app) inboxCmd() *cobra.Command {
	var f clientFlags
	var all, long, doSync bool
	var who string
	var last int
	cmd := &cobra.Command{
		Use:   "inbox",
		Short: "List received messages",
		Long: `List the messages stored in the home: received ones, or with --all the whole
conversations (sent messages with their status: queued, stored, delivered,
expired-undelivered, failed), in the order they arrived in this home, each
conversation in its sender's order (a message that waited for a missing
earlier one comes after it). --last N keeps the N most recent of that list.
inbox reads the local database only; --sync fetches new messages first (as
'cairn sync' does).

--json prints a JSON array of objects {id, contact, name, direction, counter,
text, sent_at, at, status, late}.`,
		Example: `  cairn inbox
  cairn inbox --all --from bob --last 20
  cairn inbox --sync --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, err := a.open(ctx, &f, doSync)
			if err != nil {
				return err
			}
			defer s.close()
			if doSync {
				sctx, cancel := context.WithTimeout(ctx, f.timeout)
				err := s.sync(sctx)
				if err == nil {
					s.flush(sctx)
				}
				cancel()
				if err != nil {
					return interrupted(ctx, err)
				}
			}
			dir := client.Incoming
			if all {
				dir = 0
			}
			var ms []client.Message
			if who != "" {
				ct, err := s.h.resolveContact(s.c, who)
				if err != nil {
					return err
				}
				h, err := s.c.History(ct.ID)
				if err != nil {
					return err
				}
				for _, m := range h {
					if dir == 0 || m.Direction == dir {
						ms = append(ms, m)
					}
				}
			} else {
				ms = s.messages(dir)
			}
			if last > 0 && len(ms) > last {
				ms = ms[len(ms)-last:]
			}
			return s.printMessages(ms, f.json, false, long)
		},
	}
	f.addHome(cmd)
	f.addRelays(cmd)
	f.addJSON(cmd, "print a JSON array")
	f.addTimeout(cmd, 30*time.Second, "with --sync: how long to wait for the relays")
	cmd.Flags().BoolVar(&all, "all", false, "include sent messages")
	cmd.Flags().BoolVarP(&long, "long", "l", false, "show message IDs")
	cmd.Flags().BoolVar(&doSync, "sync", false, "sync with the relays first")
	cmd.Flags().StringVar(&who, "from", "", "only the conversation with this contact")
	cmd.Flags().IntVar(&last, "last", 0, "only the last N messages")
	return cmd
}

// ---- watch

type eventJSON struct {
	Event   string       `json:"event"`
	Message *messageJSON `json:"message,omitempty"`
	ID      string       `json:"id,omitempty"`
	Contact string       `json:"contact,omitempty"`
	Name    string       `json:"name,omitempty"`
	Status  string       `json:"status,omitempty"`
	From    uint64       `json:"from,omitempty"`
	To      uint64       `json:"to,omitempty"`
	Count   int          `json:"count,omitempty"`
}

func (a *app) watchCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Stay online and print messages and status changes as they happen",
		Long: `Stay online until Ctrl-C (or SIGTERM) and print, one line each, what happens:
messages received (pushed live by a relay of your mailbox), status changes of
sent messages (stored, delivered, expired-undelivered), contacts who wrote
first, and gaps (sender counters missing on every reachable replica). Queued
messages go out meanwhile. --json prints one JSON object per line:
{event: message|status|contact|gap|dropped, ...}.

The home's database is locked while watch runs: other commands on the same
home wait for it to end (they fail with "in use").`,
		Example: `  cairn watch
  cairn watch --json | jq -r 'select(.event=="message") | .message.text'`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, err := a.open(ctx, &f, true)
			if err != nil {
				return err
			}
			defer s.close()
			if isTerminal(a.stderr) {
				fmt.Fprintf(a.stderr, "watching %s (Ctrl-C to stop)\n", s.h.dir)
			}
			// The client subscribes and syncs by itself once online;
			// say so if it cannot get there.
			go func() {
				wctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				if err := s.c.WaitReady(wctx); err != nil && ctx.Err() == nil {
					fmt.Fprintf(a.stderr, "cairn: watch: no relay could be reached (retrying in the background)\n")
				}
			}()
			enc := json.NewEncoder(a.stdout)
			out := func(line string, j eventJSON) {
				if f.json {
					_ = enc.Encode(j)
				} else {
					fmt.Fprintln(a.stdout, line)
				}
			}
			// Whatever the initial sync brings comes as events too.
			for {
				select {
				case <-ctx.Done():
					return nil
				case ev, ok := <-s.c.Events():
					if !ok {
						return nil
					}
					labels := s.labels()
					switch ev := ev.(type) {
					case client.MessageReceived:
						mj := s.messageJSON(ev.Message, labels)
						out(formatMessage(ev.Message, labels[ev.Message.Contact], false), eventJSON{Event: "message", Message: &mj})
					case client.StatusChanged:
						out(fmt.Sprintf("status %s %s (to %s)", ev.ID, ev.Status, labels[ev.Contact]),
							eventJSON{Event: "status", ID: string(ev.ID), Contact: string(ev.Contact), Name: labels[ev.Contact], Status: ev.Status.String()})
					case client.ContactAdded:
						out(fmt.Sprintf("contact %s %s fingerprint %s", labels[ev.Contact.ID], ev.Contact.ID, ev.Contact.Fingerprint()),
							eventJSON{Event: "contact", Contact: string(ev.Contact.ID), Name: labels[ev.Contact.ID]})
					case client.GapDetected:
						out(fmt.Sprintf("gap from %s: messages %d to %d are missing on every reachable relay", labels[ev.Contact], ev.From, ev.To),
							eventJSON{Event: "gap", Contact: string(ev.Contact), Name: labels[ev.Contact], From: ev.From, To: ev.To})
					case client.EventsDropped:
						out(fmt.Sprintf("dropped %d events (see 'cairn inbox')", ev.Count), eventJSON{Event: "dropped", Count: ev.Count})
					}
				}
			}
		},
	}
	f.addHome(cmd)
	f.addRelays(cmd)
	f.addJSON(cmd, "print one JSON object per event")
	return cmd
}

// ---- status

var statusNames = map[string]client.Status{
	"queued": client.StatusQueued, "stored": client.StatusStored, "delivered": client.StatusDelivered,
}

func (a *app) statusCmd() *cobra.Command {
	var f clientFlags
	var doSync bool
	var wait string
	cmd := &cobra.Command{
		Use:   "status MESSAGE-ID",
		Short: "Show the delivery status of a sent message",
		Long: `Print the status of a sent message (its ID is what 'cairn send' printed):

  queued               in the outbox, not yet stored by a relay
  stored               a relay's signed receipt says it is stored durably
  delivered            the recipient's encrypted delivery receipt arrived
  expired-undelivered  its time to live passed without a delivery receipt
  failed               the relays refused it for good

status reads the local database; delivery receipts arrive with the recipient's
messages, so --sync (or --wait) goes online first. --wait STATUS stays online
until the message reaches at least STATUS (stored or delivered) or --timeout
passes (exit code 4). --json prints {id, contact, name, status}.`,
		Example: `  cairn status 3f2a...c1/o7
  cairn status --wait delivered --timeout 1m "$id"`,
		Args: exactArgs("MESSAGE-ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var want client.Status
			if wait != "" {
				var ok bool
				if want, ok = statusNames[wait]; !ok || want == client.StatusQueued {
					return usageErrorf("status: --wait %q: want stored or delivered", wait)
				}
			}
			// Waiting needs the client online: delivery receipts come with
			// its first sync and then live.
			s, err := a.open(ctx, &f, doSync || wait != "")
			if err != nil {
				return err
			}
			defer s.close()
			id := client.MessageID(args[0])
			m, err := s.c.Message(id)
			if err != nil {
				if errors.Is(err, client.ErrUnknownMessage) {
					return inputErrorf("status: no message %q in this home", args[0])
				}
				return err
			}
			if m.Direction != client.Outgoing {
				return inputErrorf("status: %q is a received message; only sent messages have a status", args[0])
			}
			wctx, cancel := context.WithTimeout(ctx, f.timeout)
			defer cancel()
			if doSync {
				if err := s.sync(wctx); err != nil && want == 0 {
					return interrupted(ctx, err)
				}
			}
			st := m.Status
			if want != 0 {
				st = waitStatus(wctx, s.c, id, want)
			} else if m, err = s.c.Message(id); err == nil {
				st = m.Status
			}
			labels := s.labels()
			if f.json {
				if err := writeJSONOut(a.stdout, map[string]string{"id": string(id), "contact": string(m.Contact), "name": labels[m.Contact], "status": st.String()}); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(a.stdout, st)
			}
			if want != 0 && st < want {
				if ctx.Err() != nil {
					return errInterrupted
				}
				return offlineErrorf("status: still %s after %v", st, f.timeout)
			}
			return nil
		},
	}
	f.addHome(cmd)
	f.addRelays(cmd)
	f.addJSON(cmd, "print a JSON object")
	f.addTimeout(cmd, 30*time.Second, "with --sync or --wait: how long to stay online")
	cmd.Flags().BoolVar(&doSync, "sync", false, "sync with the relays first (delivery receipts arrive that way)")
	cmd.Flags().StringVar(&wait, "wait", "", "stay online until the status is at least this: stored or delivered")
	return cmd
}

// ---- output helpers

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct {
	w    io.Writer
	rows [][]string
}

func newTable(w io.Writer) *table { return &table{w: w} }

func (t *table) row(cols ...string) { t.rows = append(t.rows, cols) }

// lines returns the rows with aligned columns.
func (t *table) lines() []string {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	var out []string
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-len([]rune(c))+2))
			}
		}
		out = append(out, b.String())
	}
	return out
}

func (t *table) flush() error {
	for _, l := range t.lines() {
		if _, err := fmt.Fprintln(t.w, l); err != nil {
			return err
		}
	}
	return nil
}
