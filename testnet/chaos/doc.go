// Package chaos is the chaos soak of a cairn network (issue 9): real
// relay and client processes on 127.0.0.1 exchange messages without
// pause while a seeded scheduler kills and restarts relays and clients,
// partitions relays from each other and clients from relays, and slows
// down and breaks links; at the end everything is healed and the
// durable state of every client is checked.
//
//	rep, err := chaos.Run(ctx, chaos.Options{Bin: cairnBinary, Seed: 1, Duration: 5 * time.Minute, Out: os.Stdout})
//
// 'cairn testnet chaos' runs it; chaos_test.go runs a one-minute version
// in CI.
//
// # The network
//
// Options.Relays relays (at least 5) run as 'cairn relay' processes
// (testnet.ProcCluster) with metrics. Each relay listens on its own port
// and is reached through a proxy of this process (proxy.go) that it
// advertises (--announce): every connection to it, from relays and
// clients, goes through the proxy, which can delay each chunk of bytes or
// cut the connection with a probability per chunk. Partitions use one
// deny file shared by every process (testnet.DenyFile, 'cairn relay
// --testnet-deny-file'): a line "A B" cuts A from B; relays close the
// connections they already have across a new cut.
//
// Options.Clients clients (at least 4) run as 'cairn testnet chaos-client'
// processes on homes made with 'cairn init', 'cairn invite' and 'cairn
// contact add': every client has every other as a contact and sends to a
// random one at a seeded random pace ("chaos client-A client-B N", N
// counting from 1 per conversation). A client prints its events as JSON
// lines (Line) on stdout; the driver keeps them in the client's
// events.jsonl.
//
// # Faults
//
// The scheduler (schedule.go) draws every decision from a PCG seeded with
// Options.Seed and prints each fault with its time. It never has more
// than R−1 relays down at once (R = 3, the replication factor: so no
// replica set ever loses all its members), and at most half the clients.
// Kinds: kill a relay (SIGKILL) and restart it later; cut one or two
// relays from the others; cut a client from one or two relays; delay and
// drop on a relay's link; kill a client (SIGKILL, mid-send or mid-sync:
// clients send all the time and sync on every push) and restart it.
//
// # The end
//
// After Options.Duration: every cut and link fault is removed, every
// relay and client restarted, clients stop sending and sync until every
// message sent is delivered with its receipt back (or Options.Converge
// passes), then stop (SIGTERM: Flush). check.go then opens every home
// and checks, from the clients' own stores:
//
//  1. every message with a relay receipt (stored or delivered) was
//     delivered exactly once, in the sender's order;
//  2. every message without one is still queued or was delivered;
//  3. no gap was reported for a message the sender has;
//  4. the relays' store directories are bounded by their live data plus
//     a fixed slack per relay (badger's preallocated files: DiskSlack).
//
// A failure prints the seed and the command that replays the schedule.
// Timing is not deterministic (processes, the OS), so a replay draws the
// same faults at the same times, not the same interleavings.
package chaos
