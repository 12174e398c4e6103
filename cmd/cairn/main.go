// Command cairn runs a relay, a local testnet, or a client.
package main

func main() {}
