package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-net/cairn/relay"
)

// The relay's configuration file: one `key = value` per line, `#` comments,
// every limit of relay.Config (SPEC.md §12) with its default in the example
// that `cairn relay config-example` prints. It is parsed with the standard
// library only.

// confKind says how a value is written.
type confKind int

const (
	kindCount    confKind = iota // an integer; 10_000 allowed
	kindBytes                    // an integer of bytes, or with a KiB, MiB or GiB suffix
	kindDuration                 // 90s, 5m, 1h, 7d
	kindRate                     // a number per second
	kindString
	kindList // repeatable key
)

// confKey is one key of the file.
type confKey struct {
	key   string
	field string // the relay.Config field; "" for keys of the command
	kind  confKind
	doc   string
}

// confSection groups keys in the example.
type confSection struct {
	title string
	keys  []confKey
}

// confSections is the whole file format. Every field of relay.Config that
// is a limit appears here (TestRelayConfigCoversConfig checks it).
var confSections = []confSection{
	{"node", []confKey{
		{"data_dir", "", kindString, "Directory of the relay's state: identity.key (its Ed25519 key, mode 0600; the\npeer ID comes from it) and store/ (the badger database). Required (or --data-dir)."},
		{"listen", "", kindList, "A multiaddr to listen on; repeat the key for several. Default: TCP and QUIC on\nport 4001 of every interface."},
		{"announce", "", kindList, "A multiaddr to advertise instead of the listen addresses (what identify tells\npeers and the DHT hands out): behind a port forward or a proxy. Repeat the key\nfor several. Default: none (the listen addresses are advertised)."},
		{"bootstrap", "", kindList, "A relay to join the DHT through, with /p2p/<peer ID>; repeat for several.\nDefault: none (a lone relay, or the first of a network)."},
		{"metrics_addr", "", kindString, "host:port of the HTTP endpoint with /metrics (Prometheus) and /healthz.\nEmpty: no endpoint. Keep it on a private interface."},
		{"log_level", "", kindString, "debug, info, warn or error."},
		{"log_format", "", kindString, "text or json (log/slog, on stderr)."},
		{"memory_limit", "", kindBytes, "Soft limit of the Go heap (runtime/debug.SetMemoryLimit): the garbage\ncollector works harder near it, so the relay's anonymous memory stays about\nthere. 0: none. The\nGOMEMLIMIT environment variable, if set, wins. Default 384MiB."},
	}},
	{"relay policy (SPEC.md §12; advertised to clients where they need it)", []confKey{
		{"max_envelope_bytes", "MaxEnvelopeBytes", kindBytes, "Largest envelope accepted (TOO_LARGE above); at most 262,199 (EnvelopeOverhead +\nMaxCiphertext)."},
		{"default_ttl", "DefaultTTL", kindDuration, "Lifetime of an envelope that asks for none (expiry 0)."},
		{"max_ttl", "MaxTTL", kindDuration, "Longest lifetime accepted: an expiry must be in (now, now + max_ttl]\n(EXPIRY_INVALID otherwise)."},
		{"postage_difficulty", "PostageDifficulty", kindCount, "Proof-of-work bits a deposit must carry (0: none; at most 40). Clients solve it."},
		{"mailbox_quota_bytes", "MailboxQuotaBytes", kindBytes, "Envelope bytes one mailbox may hold (MAILBOX_QUOTA above)."},
		{"mailbox_quota_entries", "MailboxQuotaEntries", kindCount, "Entries one mailbox may hold (MAILBOX_QUOTA above)."},
		{"storage_cap_bytes", "StorageCapBytes", kindBytes, "Envelope bytes of all mailboxes together; above it the relay evicts the oldest\nentry of the largest mailbox (SPEC.md §13), or answers STORAGE_FULL."},
		{"peer_deposit_rate", "PeerDepositRate", kindRate, "Deposits per second per peer (token bucket; RATE_LIMITED above)."},
		{"peer_deposit_burst", "PeerDepositBurst", kindCount, "Burst of the deposit bucket."},
		{"peer_request_rate", "PeerRequestRate", kindRate, "Requests per second per peer of every other protocol (sync, subscribe, ack,\nstatus, prekeys, info)."},
		{"peer_request_burst", "PeerRequestBurst", kindCount, "Burst of the request bucket."},
		{"max_streams_per_peer", "MaxStreamsPerPeer", kindCount, "Concurrent inbound streams of cairn protocols per peer (BUSY above)."},
		{"max_page_entries", "MaxPageEntries", kindCount, "Entries in one sync page."},
		{"max_page_bytes", "MaxPageBytes", kindBytes, "Bytes in one sync page (at most half of MaxEntryFrame, 2 MiB)."},
		{"max_subscribers_per_mailbox", "MaxSubscribersPerMailbox", kindCount, "Live subscriptions of one mailbox (BUSY above)."},
		{"subscriber_queue", "SubscriberQueue", kindCount, "Pushes queued per subscriber (SLOW_CONSUMER when full)."},
		{"subscriber_queue_bytes", "SubscriberQueueBytes", kindBytes, "Bytes queued per subscriber (SLOW_CONSUMER when full); at least\nmax_envelope_bytes."},
		{"keepalive_interval", "KeepaliveInterval", kindDuration, "Idle time of a subscription before the relay sends a keepalive."},
		{"stream_idle_timeout", "StreamIdleTimeout", kindDuration, "How long the relay waits for a request's frame on a stream."},
		{"deposit_idle_timeout", "DepositIdleTimeout", kindDuration, "How long a deposit stream may stay idle between frames."},
		{"write_timeout", "WriteTimeout", kindDuration, "Bound on every write (a response, a page, a push)."},
		{"max_replay_cache", "MaxReplayCache", kindCount, "Live entries of the authentication replay cache (BUSY when full)."},
		{"max_stored_prekeys", "MaxStoredPrekeys", kindCount, "One-time prekeys kept per kind per mailbox."},
		{"fate_retention", "FateRetention", kindDuration, "How long after its expiry an entry's fate (acked, expired) is remembered\nfor senders' status queries."},
		{"replication_factor", "ReplicationFactor", kindCount, "R: the size of a mailbox's replica set (SPEC.md §14)."},
		{"receipt_quorum", "ReceiptQuorum", kindCount, "Replicas (this relay included) that must hold a new entry before its deposit\nis answered: 1 to replication_factor. Above 1 the answer waits for the other\nreplicas, at most quorum_timeout."},
		{"quorum_timeout", "QuorumTimeout", kindDuration, "Bound on the wait for receipt_quorum; the entry is durable here regardless,\nand replication goes on."},
		{"replica_grace", "ReplicaGrace", kindDuration, "How long a former replica is still trusted for replication."},
		{"replica_cache_ttl", "ReplicaCacheTTL", kindDuration, "How long a replica set found with a DHT lookup is reused (churn in the\nrouting table makes the relay check it earlier)."},
		{"replica_lookup_timeout", "ReplicaLookupTimeout", kindDuration, "Bound on one DHT lookup of a replica set."},
		{"max_replica_lookups", "MaxReplicaLookups", kindCount, "DHT lookups of replica sets in flight; beyond it the relay uses its routing\ntable's estimate."},
		{"replicate_queue", "ReplicateQueue", kindCount, "Entries and tombstones waiting to be forwarded to one replica; what does not\nfit is left to anti-entropy."},
		{"replicate_queue_bytes", "ReplicateQueueBytes", kindBytes, "Envelope bytes waiting to be forwarded to one replica; at least\nmax_envelope_bytes."},
		{"anti_entropy_interval", "AntiEntropyInterval", kindDuration, "Period of anti-entropy: each mailbox is reconciled with each other replica\n(also as soon as a replica reconnects)."},
		{"catch_up_wait", "CatchUpWait", kindDuration, "How long a restarting relay waits for its routing table before its first\nanti-entropy pass (/healthz reports it catching up until that pass is done)."},
		{"reconcile_id_threshold", "ReconcileIDThreshold", kindCount, "Anti-entropy: below this many IDs a range is sent whole (SPEC.md §10.10)."},
		{"reconcile_branching", "ReconcileBranching", kindCount, "Anti-entropy: sub-ranges per split."},
		{"max_reconcile_rounds", "MaxReconcileRounds", kindCount, "Anti-entropy: rounds per reconciliation."},
		{"summary_rate", "SummaryRate", kindRate, "Anti-entropy: summary exchanges answered per second from all peers together\n(each peer also at most one a second; BUSY above)."},
	}},
	{"implementation limits (not advertised; they bound the relay's own resources)", []confKey{
		{"deposit_stream_bytes", "DepositStreamBytes", kindBytes, "Envelope bytes read and not yet answered on one deposit stream (backpressure\nabove); at least max_envelope_bytes."},
		{"max_connections", "MaxConnections", kindCount, "Connections (libp2p resource manager); the connection manager trims above 90%."},
		{"max_memory_bytes", "MaxMemoryBytes", kindBytes, "Memory for libp2p (stream buffers, in-flight deposits); at least 1 MiB."},
		{"drain_timeout", "DrainTimeout", kindDuration, "On SIGTERM, how long in-flight requests may finish before their streams are\nreset."},
		{"gc_interval", "GCInterval", kindDuration, "Period of the store's expiry sweep and value-log GC; negative disables it."},
		{"max_commit_batch", "MaxCommitBatch", kindCount, "Operations per group commit of the store: one fsync, one receipt signature\n(at most 1,024)."},
		{"max_store_backlog", "MaxStoreBacklog", kindCount, "Operations queued ahead of the store (admitted deposits, appends, replicated\nentries, acks) above which a deposit is answered BUSY with a retry_after of\nabout the time to commit them (SPEC.md §10.3); at least max_commit_batch."},
		{"store_memory_bytes", "StoreMemoryBytes", kindBytes, "Memory budget of the store (at least 16 MiB): badger's two memtables (1/4\neach), its table-index cache (1/4) and the anti-entropy indexes (1/4, least\nrecently used dropped). Badger's memory-mapped files are unmapped from the\nprocess every second and when they grow by a quarter of it (the page cache\nkeeps them); running compactions' buffers and output tables come on top."},
	}},
}

// confNonLimits are the relay.Config fields that are not settable in the
// file: values the command supplies (or programs, not operators, set).
var confNonLimits = map[string]string{
	"Identity":        "loaded from data_dir",
	"DataDir":         "data_dir",
	"ListenAddrs":     "listen",
	"AnnounceAddrs":   "announce",
	"BootstrapPeers":  "bootstrap",
	"Logger":          "log_level, log_format",
	"Version":         "the build's version",
	"Now":             "the system clock",
	"ResourceManager": "derived from the limits",
	"ConnectionGater": "none",
	"Placement":       "replication (issue 6)",
	"Forwarder":       "replication (issue 6)",
	"DHTOptions":      "programs only (a testnet's DHT tuning)",
}

// cfgHas reports whether relay.Config has a field. The table may name
// fields of a relay package newer than the one built in; they are left
// out of the file format until it has them.
func cfgHas(field string) bool {
	_, ok := reflect.TypeFor[relay.Config]().FieldByName(field)
	return ok
}

// relayFile is what a config file sets: the keys of the command and the
// relay.Config it was applied to.
type relayFile struct {
	DataDir     string
	Listen      []string
	Announce    []string
	Bootstrap   []string
	MetricsAddr string
	LogLevel    string
	LogFormat   string
	MemoryLimit int64 // -1: not set
	set         map[string]bool
}

// parseRelayConfig reads a config file into cfg (which holds the defaults).
// name is used in errors ("FILE:LINE: …").
func parseRelayConfig(name string, r io.Reader, cfg *relay.Config) (*relayFile, error) {
	keys := map[string]confKey{}
	for _, s := range confSections {
		for _, k := range s.keys {
			if k.field == "" || cfgHas(k.field) {
				keys[k.key] = k
			}
		}
	}
	f := &relayFile{set: map[string]bool{}, MemoryLimit: -1}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	line := 0
	v := reflect.ValueOf(cfg).Elem()
	for sc.Scan() {
		line++
		text := stripComment(sc.Text())
		if text == "" {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s", name, line, fmt.Sprintf(format, args...))
		}
		key, val, ok := strings.Cut(text, "=")
		if !ok {
			return nil, bad("want `key = value`, got %q", text)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		k, ok := keys[key]
		if !ok {
			return nil, bad("unknown key %q (see 'cairn relay config-example')", key)
		}
		if k.kind != kindList && f.set[key] {
			return nil, bad("%s is set twice", key)
		}
		f.set[key] = true
		if len(val) >= 2 && val[0] == '"' {
			uq, err := strconv.Unquote(val)
			if err != nil {
				return nil, bad("%s: bad quoted string %s", key, val)
			}
			val = uq
		}
		if val == "" {
			return nil, bad("%s has no value", key)
		}
		if k.field == "" {
			switch key {
			case "data_dir":
				f.DataDir = val
			case "listen":
				f.Listen = append(f.Listen, val)
			case "announce":
				f.Announce = append(f.Announce, val)
			case "bootstrap":
				f.Bootstrap = append(f.Bootstrap, val)
			case "metrics_addr":
				f.MetricsAddr = val
			case "log_level":
				f.LogLevel = val
			case "log_format":
				f.LogFormat = val
			case "memory_limit":
				n, err := parseBytes(val)
				if err != nil {
					return nil, bad("%s: %v", key, err)
				}
				f.MemoryLimit = n
			}
			continue
		}
		fv := v.FieldByName(k.field)
		if !fv.IsValid() {
			return nil, bad("%s is not supported by this relay", key)
		}
		if err := setField(fv, k.kind, val); err != nil {
			return nil, bad("%s: %v", key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return f, nil
}

// stripComment removes a # comment (at the start or after a space) and
// surrounding space.
func stripComment(s string) string {
	inQuote := false
	for i, r := range s {
		switch {
		case r == '"' && (i == 0 || s[i-1] != '\\'):
			inQuote = !inQuote
		case r == '#' && !inQuote && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t'):
			return strings.TrimSpace(s[:i])
		}
	}
	return strings.TrimSpace(s)
}

// setField parses val into a relay.Config field.
func setField(fv reflect.Value, kind confKind, val string) error {
	switch kind {
	case kindDuration:
		d, err := parseDuration(val)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
	case kindBytes:
		n, err := parseBytes(val)
		if err != nil {
			return err
		}
		return setInt(fv, n)
	case kindCount:
		n, err := strconv.ParseInt(val, 0, 64)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", val)
		}
		return setInt(fv, n)
	case kindRate:
		x, err := strconv.ParseFloat(strings.ReplaceAll(val, "_", ""), 64)
		if err != nil || math.IsNaN(x) || x < 0 {
			return fmt.Errorf("want a rate per second, got %q", val)
		}
		fv.SetFloat(x)
	default:
		return fmt.Errorf("internal: kind %d", kind)
	}
	return nil
}

func setInt(fv reflect.Value, n int64) error {
	if fv.OverflowInt(n) {
		return fmt.Errorf("%d is out of range", n)
	}
	fv.SetInt(n)
	return nil
}

// parseDuration accepts Go durations and whole days ("7d").
func parseDuration(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(d, 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64/int64(24*time.Hour) {
			return 0, fmt.Errorf("want a duration like 90s, 5m, 1h or 7d, got %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want a duration like 90s, 5m, 1h or 7d, got %q", s)
	}
	return d, nil
}

var byteSuffixes = []struct {
	suffix string
	mult   int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

// parseBytes accepts an integer with an optional KiB, MiB or GiB suffix.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	num := s
	for _, b := range byteSuffixes {
		if n, ok := strings.CutSuffix(s, b.suffix); ok {
			num, mult = strings.TrimSpace(n), b.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 0, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("want a size in bytes (e.g. 65536, 64MiB, 10GiB), got %q", s)
	}
	return n * mult, nil
}

// formatDuration writes d in the largest exact unit.
func formatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// formatBytes writes n with a MiB or GiB suffix when exact.
func formatBytes(n int64) string {
	for _, b := range byteSuffixes {
		if b.mult >= 1<<20 && n >= b.mult && n%b.mult == 0 {
			return fmt.Sprintf("%d%s", n/b.mult, b.suffix)
		}
	}
	return strconv.FormatInt(n, 10)
}

// formatValue writes a relay.Config field as the file wants it.
func formatValue(fv reflect.Value, kind confKind) string {
	switch kind {
	case kindDuration:
		return formatDuration(time.Duration(fv.Int()))
	case kindBytes:
		return formatBytes(fv.Int())
	case kindCount:
		return strconv.FormatInt(fv.Int(), 10)
	case kindRate:
		return strconv.FormatFloat(fv.Float(), 'g', -1, 64)
	}
	return fmt.Sprint(fv.Interface())
}

// writeConfigExample writes the example file: every key with its default
// and what it does.
func writeConfigExample(w io.Writer) error {
	cfg := relay.DefaultConfig()
	v := reflect.ValueOf(&cfg).Elem()
	bw := bufio.NewWriter(w)
	fmt.Fprint(bw, `# cairn relay configuration (cairn relay --config FILE).
#
# Generated by 'cairn relay config-example': every key, with its default.
# Format: one "key = value" per line; "#" starts a comment (at the start of a
# line or after a space). A missing key keeps its default; a key set twice, an
# unknown key or a bad value is an error (exit code 3). "listen" and
# "bootstrap" may be repeated. Values: durations as 90s, 5m, 1h, 7d; sizes in
# bytes or with a KiB, MiB or GiB suffix; counts as integers (10_000 works);
# rates per second; strings bare or "quoted". Command-line flags override the
# file (--listen and --bootstrap replace the file's lists).
`)
	for _, s := range confSections {
		fmt.Fprintf(bw, "\n## %s\n", s.title)
		for _, k := range s.keys {
			fmt.Fprintln(bw)
			for l := range strings.SplitSeq(k.doc, "\n") {
				fmt.Fprintf(bw, "# %s\n", l)
			}
			if k.field == "" {
				switch k.key {
				case "data_dir":
					fmt.Fprintf(bw, "# %s = /var/lib/cairn\n", k.key)
				case "listen":
					for _, a := range cfg.ListenAddrs {
						fmt.Fprintf(bw, "listen = %s\n", a)
					}
				case "announce":
					fmt.Fprintf(bw, "# announce = /ip4/203.0.113.7/tcp/4001\n")
				case "bootstrap":
					fmt.Fprintf(bw, "# bootstrap = /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...\n")
				case "metrics_addr":
					fmt.Fprintf(bw, "# metrics_addr = 127.0.0.1:9100\n")
				case "log_level":
					fmt.Fprintf(bw, "log_level = info\n")
				case "log_format":
					fmt.Fprintf(bw, "log_format = text\n")
				case "memory_limit":
					fmt.Fprintf(bw, "memory_limit = 384MiB\n")
				}
				continue
			}
			fv := v.FieldByName(k.field)
			if !fv.IsValid() {
				continue
			}
			val := formatValue(fv, k.kind)
			if k.kind == kindCount {
				if n := fv.Int(); n >= 10_000 && formatBytes(n) == strconv.FormatInt(n, 10) {
					val = groupDigits(n)
				}
			}
			fmt.Fprintf(bw, "%s = %s\n", k.key, val)
		}
	}
	return bw.Flush()
}

// groupDigits writes 10000 as 10_000.
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}
