// Package testnet builds local cairn clusters on 127.0.0.1: in one process
// for tests and benchmarks, or as separate processes for people, with faults
// on demand (kill, restart, partition, delay, drop).
package testnet
