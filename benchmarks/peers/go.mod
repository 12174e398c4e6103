module github.com/cairn-net/cairn/benchmarks/peers

go 1.26.0

require (
	github.com/cairn-net/cairn v0.0.0-00010101000000-000000000000
	go.mau.fi/libsignal v0.2.1
)

require (
	filippo.io/edwards25519 v1.1.0 // indirect
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/cairn-net/cairn => ../..
