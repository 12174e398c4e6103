// Package testnet builds local cairn clusters on 127.0.0.1: in one process
// for tests and benchmarks, or as separate relay processes for crash tests
// and for people, with faults on demand (stop, kill, restart, partition,
// delay, drop, clients offline).
//
// # In one process
//
//	c := testnet.New(t, testnet.WithRelays(5), testnet.WithClients(2))
//	alice, bob := c.Clients[0].Client(), c.Clients[1].Client()
//	…
//	c.Partition([]testnet.Member{c.Relays[0], c.Relays[1]}) // the rest on the other side
//	c.Heal()
//	_ = c.Relays[2].Kill()
//	_ = c.Relays[2].Restart(ctx)
//	c.SetFault(c.Relays[3], testnet.LinkFault{Delay: 50 * time.Millisecond, DropRate: 0.01})
//	_ = c.Clients[1].Offline()
//
// New (tests: t.Fatal on failure, Close in t.Cleanup) and Start (anything
// else: an error, and Close) build N relays and M clients. Each relay is a
// relay.Node from relay.DefaultConfig with TCP on 127.0.0.1 (port chosen by
// the OS), the null resource manager, its own data directory (identity and
// store, kept across restarts) and the cluster's connection gater; each
// client has its own data directory and at-rest key. The DHT is built with
// the fast recipe of LIBP2P-NOTES.md: every relay's address goes into every
// relay's peerstore, then each relay connects to its 20 XOR-closest relays
// and 8 others drawn with the seed; the cluster is ready when every routing
// table holds min(N−1, 20) peers. While that mesh is made, relays may dial
// only their planned neighbours (the relays' DHTs refresh on their own and
// would otherwise dial everyone they hear of): 100 relays come up in about
// 5–8 s on two cores.
//
// # Faults
//
// Stop closes a relay gracefully; Kill closes its links and its libp2p host
// first (every connection reset, nothing drained or answered) and only then
// releases its store, which is as close to a crash as one process allows
// (the store's memory is flushed; ProcCluster kills real processes with
// SIGKILL). Restart starts it again on its data directory: same peer ID,
// same cluster address, and the same real port when it is still free.
//
// Links. With links on (the default), every relay is reached through a
// link: a small TCP proxy on 127.0.0.1 whose address is the relay's address
// in the cluster (in every peerstore, in the clients' bootstrap lists). Each
// client also has its own link to each relay. A link forwards chunks of
// bytes and can hold each one for a delay (plus seeded jitter, order kept),
// or cut the connection with a probability per chunk (seeded): TCP cannot
// lose bytes without breaking the stream, so a lossy link shows up as
// connections that die, which is what libp2p sees of a bad network. The
// relays' gaters keep links honest: a relay dials other relays only at
// their link addresses, and accepts only connections that came through one
// of its links (a link's upstream socket is bound, and registered, before
// it connects, so the gater can recognise it). After the security handshake
// the gater tells the link who dialed, so a fault can be set per pair of
// members (SetPairFault) or for every link of a member (SetFault). A
// client's libp2p keys are fresh at every start; Online registers its peer
// IDs (client.Client.PeerID and SenderPeerID, its two hosts) before the
// client starts, so every connection it makes is attributed. A client's own links are for that client only.
//
// Partitions are enforced by the gater of every relay and of every online
// client (client.Config.ConnectionGater): dials and connections across the
// cut are refused; and by closing the connections that cross the cut at
// once, at the relays and in the links. A partition blocks relay–relay and
// client–relay traffic; clients never talk to each other directly. Heal
// clears the relays' dial backoffs and reconnects the mesh.
//
// With Options.DirectLinks, members dial the relays' own addresses: no
// proxy hop (benchmarks), but no delay or drop; partitions still block
// relays and clients.
//
// # As processes
//
// ProcCluster (NewProcs, StartProcs) starts relay processes from a cairn
// binary ("cairn relay --data-dir D --listen A --bootstrap B…", reading its
// "peer", "addr" and "ready" lines), or re-executes the running test binary
// as a relay child (RelayChildEnv, RelayChildMain). Each child is in its own
// process group and, on Linux, dies with this process (Pdeathsig); Kill
// sends SIGKILL, Stop SIGTERM, Restart starts it again on its data
// directory and port, and Close kills and waits for every child, so no
// child outlives the cluster. Readiness is checked from a probe host: DHT
// lookups of a few keys must find the true replica sets.
//
// # Helpers
//
// WaitFor and Eventually poll a condition that says what is missing;
// ReplicaSet computes a mailbox's true replica set from every relay's peer
// ID (SPEC.md §14) without asking the DHT; Holders and CountReplicas ask
// each running relay's store; RelayByID finds a relay.
package testnet
