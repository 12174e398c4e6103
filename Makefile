# Developer entry points; each is a script under scripts/ so CI runs the same.
.PHONY: test race lint fuzz-smoke bench proto vulncheck ci

test race:
	scripts/test

lint:
	scripts/lint

fuzz-smoke:
	scripts/fuzz-smoke 5s

bench:
	go test -run='^$$' -bench=. -benchmem ./...

proto:
	scripts/gen-proto

vulncheck:
	scripts/vulncheck

ci:
	.ci/run
