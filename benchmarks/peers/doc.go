// Package peers benchmarks cairn's ratchet side by side with other Go
// implementations of the Signal protocol, in one run on one machine.
//
// It is a separate module on purpose: go.mau.fi/libsignal is GPL-3.0, and
// cairn's own module must never depend on it. Nothing outside this
// directory imports this package. Run:
//
//	cd benchmarks/peers && go test -run '^$' -bench . -benchmem -count 5
package peers
