// Command cairn runs a relay, a local testnet, or a client.
//
//	cairn relay --data-dir DIR [--listen ADDR]... [--bootstrap ADDR]... [--config FILE] [--metrics-addr HOST:PORT]
//	cairn relay config-example
//	cairn testnet up --relays N [--dir D]
//	cairn testnet demo
//	cairn init | invite | contact add NAME INVITE | contacts | send NAME [TEXT] | sync | inbox | watch | status ID
//
// Every command has --help with examples. Exit codes:
//
//	0    success
//	1    failure: an operation failed (disk, network, a relay that would not start)
//	2    usage: unknown command or flag, wrong arguments, a malformed flag value
//	3    bad input: an invite, a config file, a contact or message ID that is
//	     not valid or not known, a home directory that is not initialised
//	4    offline: no relay could be reached, or a sent message is still queued
//	     (it stays in the outbox and goes out with the next online command)
//	5    lost: the testnet demo found a message that was sent and not delivered
//	130  interrupted (SIGINT or SIGTERM) before the command finished
//
// Errors are one line on stderr, "cairn: …". Results go to stdout; logs and
// progress go to stderr (progress only when stderr is a terminal).
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:]))
}
