package testnet

import (
	"os/exec"
	"syscall"
)

// setProcAttrs puts the child in its own process group (so that a kill
// reaches whatever it starts) and asks the kernel to SIGKILL it if this
// process dies without cleaning up.
func setProcAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup sends SIGKILL (hard) or SIGTERM to the child's process group.
func killGroup(cmd *exec.Cmd, hard bool) {
	sig := syscall.SIGTERM
	if hard {
		sig = syscall.SIGKILL
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
}
