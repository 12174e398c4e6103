//go:build race

package wire

// raceEnabled reports whether the tests run under the race detector, where
// the exhaustive single-threaded checks (every bit of an encoding, every
// character of an invite) sample instead: they find no races and would
// take most of the race run's time. Without -race they are exhaustive.
const raceEnabled = true
