package main

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcAttrs puts a child relay in its own process group (a Ctrl-C on the
// terminal reaches only this process, which stops the relays in order) and
// asks the kernel to SIGKILL it if this process dies without cleaning up.
func setProcAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signalGroup sends SIGKILL (hard) or SIGTERM to the child's process group.
func signalGroup(cmd *exec.Cmd, hard bool) {
	sig := syscall.SIGTERM
	if hard {
		sig = syscall.SIGKILL
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
}

// lockFile takes an exclusive, non-blocking lock on f (flock); false if
// another process holds it.
func lockFile(f *os.File) (bool, error) {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == syscall.EWOULDBLOCK {
		return false, nil
	}
	return err == nil, err
}
