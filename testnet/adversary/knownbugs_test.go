//go:build adversary_known_bugs

// Tests of known bugs (TESTING.md lists them). They fail today and
// are kept out of the default run until the bug is fixed; run them with
//
//	go test -race -tags adversary_known_bugs -run KnownBug ./testnet/adversary
//
// Once a fix lands, the test moves to the default build.

package adversary

import (
	"testing"
	"time"
)

// KnownBug 3 (relay, SPEC.md §10.3, §11 BUSY): driven at twice its
// capacity by senders that each stay within PeerDepositRate, a relay must
// shed the excess with a status and keep the wait of what it admits short.
// Since MaxStoreBacklog it sheds. A sender's answers come no faster than
// its window (wire.MaxDepositInflight) per wait, and 8 windows at twice the
// capacity C need every answer within 8 × 256 / 2C = 1,024 / C: with 1,024
// operations admitted the wait is at least 1,024 / C, so the senders fell
// 1–6 s behind. Halving the bound while refusing (tried in issue 9 and
// reverted: it cost throughput and the honest senders' share under
// attack) made 4 of 6 runs pass at load 6.8–11, none at load ≥ 15
// (TESTING.md, BENCHMARKS.md).
func TestKnownBugLoadNotShed(t *testing.T) {
	r := oneRelay(t, nil)
	cs := loadClients(t, r, loadPeers, client10s)
	c := capacity(t, r, cs, 2*time.Second)
	over, _, _, _ := overload(t, r, cs, c, 6*time.Second, time.Second)
	t.Logf("capacity %.0f/s; at 2× for 6 s: %+v, p50 %v, p99 %v", c, summary(over), over.Quantile(.5), over.Quantile(.99))
	if shed := over.RateLimited + over.Busy; shed < over.Sent/4 {
		t.Errorf("at 2× capacity %d of %d deposits were shed with a status; want about half", shed, over.Sent)
	}
	if over.Lateness > time.Second || over.Quantile(.99) > 2*time.Second {
		t.Errorf("senders fell %v behind their schedule, p99 latency %v: the excess was queued, not shed", over.Lateness, over.Quantile(.99))
	}
}
