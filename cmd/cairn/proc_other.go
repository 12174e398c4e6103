//go:build !unix

package main

import (
	"os"
	"os/exec"
)

func setProcAttrs(*exec.Cmd) {}

// signalGroup kills the child (there are no process groups or SIGTERM here).
func signalGroup(cmd *exec.Cmd, _ bool) { _ = cmd.Process.Signal(os.Kill) }

// lockFile is a no-op here: the database's own lock still refuses a second
// process.
func lockFile(*os.File) (bool, error) { return true, nil }
