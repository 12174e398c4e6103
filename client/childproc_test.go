package client_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-net/cairn/client"
)

// Some tests run a client in a child process (this test binary re-executed
// with childEnv set) so that it can be killed with SIGKILL at an arbitrary
// point. The child talks to the parent through lines on stdout.

// childEnv names the child's mode (see runChild).
const childEnv = "CAIRN_CLIENT_TEST_CHILD"

// runChild runs a child mode and returns the exit code.
//
//	invite  create the identity, print "INVITE <invite>", exit
//	recv    start, print "HAVE <n>" as incoming messages are stored, until
//	        CAIRN_N of them; then print "DONE" and exit
//	send    start, accept CAIRN_INVITE, send CAIRN_N messages "<CAIRN_PREFIX>-NNN",
//	        print "SENT", then wait to be killed
//	resume  start, wait until no outgoing message is queued, print "DONE", exit
func runChild(mode string) int {
	cfg := testConfig(os.Getenv("CAIRN_DIR"), strings.Split(os.Getenv("CAIRN_RELAYS"), ","))
	n, _ := strconv.Atoi(os.Getenv("CAIRN_N"))
	c, err := client.New(cfg)
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	defer c.Close()
	if mode == "invite" {
		inv, err := c.Invite()
		if err != nil {
			fmt.Println("ERROR", err)
			return 1
		}
		fmt.Println("INVITE", inv)
		return 0
	}
	if err := c.Start(context.Background()); err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	switch mode {
	case "recv":
		last := -1
		for {
			have := 0
			for _, ct := range c.Contacts() {
				h, _ := c.History(ct.ID)
				for _, m := range h {
					if m.Direction == client.Incoming {
						have++
					}
				}
			}
			if have != last {
				fmt.Println("HAVE", have)
				last = have
			}
			if have >= n {
				fmt.Println("DONE")
				return 0
			}
			time.Sleep(2 * time.Millisecond)
		}
	case "send":
		ct, err := c.AcceptInvite(os.Getenv("CAIRN_INVITE"))
		if err != nil {
			fmt.Println("ERROR", err)
			return 1
		}
		for i := 1; i <= n; i++ {
			if _, err := c.Send(context.Background(), ct.ID, fmt.Appendf(nil, "%s-%03d", os.Getenv("CAIRN_PREFIX"), i)); err != nil {
				fmt.Println("ERROR", err)
				return 1
			}
		}
		fmt.Println("SENT")
		select {}
	case "resume":
		for {
			queued := 0
			for _, ct := range c.Contacts() {
				h, _ := c.History(ct.ID)
				for _, m := range h {
					if m.Direction == client.Outgoing && m.Status == client.StatusQueued {
						queued++
					}
				}
			}
			if queued == 0 {
				fmt.Println("DONE")
				return 0
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	fmt.Println("ERROR unknown mode", mode)
	return 2
}

// child is a running child process.
type child struct {
	t     testing.TB
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

// startChild runs this test binary in a child mode with env (KEY=VALUE).
func startChild(t testing.TB, mode string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := &child{t: t, cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		defer close(ch.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			ch.lines <- sc.Text()
		}
	}()
	go func() { _ = cmd.Wait(); close(ch.done) }()
	t.Cleanup(ch.kill)
	return ch
}

// expect reads lines until one starts with prefix and returns the rest.
func (c *child) expect(prefix string) string {
	c.t.Helper()
	timeout := time.After(120 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("child ended before %q", prefix)
			}
			if strings.HasPrefix(l, "ERROR") {
				c.t.Fatalf("child: %s", l)
			}
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				return strings.TrimSpace(rest)
			}
		case <-timeout:
			c.t.Fatalf("timed out waiting for %q from child", prefix)
		}
	}
}

// kill sends SIGKILL and waits for the process to end.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

// wait waits for a normal exit.
func (c *child) wait() {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(120 * time.Second):
		c.t.Fatal("child did not exit")
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 0 {
		c.t.Fatalf("child exit code %d", code)
	}
}
