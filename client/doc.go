// Package client is the embeddable cairn client: identity, invites,
// sessions, a durable outbox, incremental sync from any replica, and events.
package client
