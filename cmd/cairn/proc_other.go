//go:build !unix

package main

import (
	"os"
	"os/exec"
)

func setProcAttrs(*exec.Cmd) {}

// signalGroup kills the child (there are no process groups or SIGTERM here).
func signalGroup(cmd *exec.Cmd, _ bool) { _ = cmd.Process.Signal(os.Kill) }
