//go:build !unix

package testnet

import (
	"os"
	"os/exec"
)

func setProcAttrs(*exec.Cmd) {}

// killGroup kills the child (there are no process groups or SIGTERM here).
func killGroup(cmd *exec.Cmd, _ bool) { _ = cmd.Process.Signal(os.Kill) }
