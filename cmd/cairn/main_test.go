package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// The CLI tests are testscript files in testdata/script: each runs the real
// cairn binary (this test binary, installed as "cairn" in $PATH by
// testscript.Main) as separate processes, on 127.0.0.1 only.

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"cairn": func() { os.Exit(run(os.Args[1:])) },
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("CAIRN_HOME", filepath.Join(env.WorkDir, "default-home"))
			env.Values[procsKey{}] = &scriptProcs{m: map[string]*scriptProc{}}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"startrelay": cmdStartRelay,
			"stoprelay":  cmdStopRelay,
			"httpget":    cmdHTTPGet,
			"exitcode":   cmdExitCode,
			"waitmatch":  cmdWaitMatch,
			"envfrom":    cmdEnvFrom,
		},
	})
}

type procsKey struct{}

// scriptProcs are the background relays of one script.
type scriptProcs struct {
	mu sync.Mutex
	m  map[string]*scriptProc
}

type scriptProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	out  []string // stdout lines
}

func (p *scriptProc) lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.out...)
}

// scriptEnv is the environment of a child: this process's, with the
// script's own variables that cairn reads.
func scriptEnv(ts *testscript.TestScript) []string {
	env := os.Environ()
	for _, k := range []string{"HOME", "CAIRN_HOME", "TMPDIR", "WORK", "PATH"} {
		env = append(env, k+"="+ts.Getenv(k))
	}
	return env
}

func cairnBin(ts *testscript.TestScript) string {
	for dir := range strings.SplitSeq(ts.Getenv("PATH"), string(os.PathListSeparator)) {
		p := filepath.Join(dir, "cairn")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	ts.Fatalf("cairn not found in $PATH")
	return ""
}

// startrelay NAME [cairn relay flags...]
//
// runs `cairn relay flags...` in the background (its own process group,
// killed at the end of the script), waits for its "ready" line and sets
// $NAME_PEER, $NAME_ADDR (its first TCP address, with /p2p/) and
// $NAME_METRICS (the metrics URL, if any) from what it printed. The peer ID
// is also written to NAME.peer; its log (stderr) goes to NAME.log.
func cmdStartRelay(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! startrelay")
	}
	if len(args) < 1 {
		ts.Fatalf("usage: startrelay NAME [flags]")
	}
	name := args[0]
	procs := ts.Value(procsKey{}).(*scriptProcs)
	cmd := exec.Command(cairnBin(ts), append([]string{"relay"}, args[1:]...)...)
	cmd.Dir = ts.MkAbs(".")
	cmd.Env = scriptEnv(ts)
	setProcAttrs(cmd)
	logf, err := os.Create(ts.MkAbs(name + ".log"))
	ts.Check(err)
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	ts.Check(err)
	ts.Check(cmd.Start())
	p := &scriptProc{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		closed := false
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			p.mu.Unlock()
			if sc.Text() == "ready" && !closed {
				close(ready)
				closed = true
			}
		}
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	ts.Defer(func() {
		signalGroup(cmd, true)
		<-p.done
	})
	procs.mu.Lock()
	procs.m[name] = p
	procs.mu.Unlock()
	select {
	case <-ready:
	case <-p.done:
		log, _ := os.ReadFile(ts.MkAbs(name + ".log"))
		ts.Fatalf("relay %s exited before it was ready: %s", name, log)
	case <-time.After(60 * time.Second):
		ts.Fatalf("relay %s not ready after 60 s", name)
	}
	var peerID, addr, metrics string
	for _, l := range p.lines() {
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[0] == "peer":
			peerID = f[1]
		case len(f) == 2 && f[0] == "addr" && addr == "" && strings.Contains(f[1], "/tcp/"):
			addr = f[1]
		case len(f) == 2 && f[0] == "metrics":
			metrics = f[1]
		}
	}
	if peerID == "" || addr == "" || !strings.HasSuffix(addr, "/p2p/"+peerID) {
		ts.Fatalf("relay %s printed no usable peer and addr lines: %q", name, p.lines())
	}
	ts.Check(os.WriteFile(ts.MkAbs(name+".peer"), []byte(peerID+"\n"), 0o600))
	ts.Setenv(name+"_PEER", peerID)
	ts.Setenv(name+"_ADDR", addr)
	ts.Setenv(name+"_METRICS", metrics)
	ts.Setenv(name+"_HEALTH", strings.TrimSuffix(metrics, "/metrics")+"/healthz")
}

// stoprelay NAME [TERM|INT|KILL]
//
// signals the relay (default TERM) and waits for it to exit. After TERM or
// INT it checks a clean shutdown: exit code 0 and a "stopped" line.
func cmdStopRelay(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: stoprelay NAME [TERM|INT|KILL]")
	}
	procs := ts.Value(procsKey{}).(*scriptProcs)
	procs.mu.Lock()
	p := procs.m[args[0]]
	delete(procs.m, args[0])
	procs.mu.Unlock()
	if p == nil {
		ts.Fatalf("no relay %s", args[0])
	}
	sig := "TERM"
	if len(args) == 2 {
		sig = args[1]
	}
	switch sig {
	case "KILL":
		signalGroup(p.cmd, true)
	case "TERM":
		ts.Check(p.cmd.Process.Signal(syscall.SIGTERM))
	case "INT":
		ts.Check(p.cmd.Process.Signal(os.Interrupt))
	default:
		ts.Fatalf("unknown signal %s", sig)
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		ts.Fatalf("relay %s did not exit within 60 s of SIG%s", args[0], sig)
	}
	if sig == "KILL" {
		return
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		ts.Fatalf("relay %s exited with %d after SIG%s", args[0], code, sig)
	}
	lines := p.lines()
	if len(lines) == 0 || lines[len(lines)-1] != "stopped" {
		ts.Fatalf("relay %s did not print \"stopped\" last: %q", args[0], lines)
	}
}

// httpget URL
//
// GETs URL and writes the body to stdout; it fails on an error or a
// status other than 200 (or, negated, succeeds only then).
func cmdHTTPGet(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: httpget URL")
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(args[0])
	if err == nil {
		defer resp.Body.Close()
		var b []byte
		b, err = io.ReadAll(resp.Body)
		_, _ = ts.Stdout().Write(b)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
	}
	if neg {
		if err == nil {
			ts.Fatalf("httpget %s succeeded", args[0])
		}
		return
	}
	ts.Check(err)
}

// exitcode [-stdin=FILE] N cairn ARGS...
//
// runs cairn with ARGS (stdin empty, or FILE) and checks that it exits
// with code N; its stdout and stderr are then what `stdout` and `stderr`
// check.
func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	var stdin string
	if len(args) > 0 && strings.HasPrefix(args[0], "-stdin=") {
		stdin, args = ts.ReadFile(strings.TrimPrefix(args[0], "-stdin=")), args[1:]
	}
	if neg || len(args) < 2 || args[1] != "cairn" {
		ts.Fatalf("usage: exitcode [-stdin=FILE] N cairn [args]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	cmd := exec.Command(cairnBin(ts), args[2:]...)
	cmd.Dir = ts.MkAbs(".")
	cmd.Env = scriptEnv(ts)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	ts.Check(cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		ts.Fatalf("cairn %s: still running after 2 minutes (killed)\nstderr: %s", strings.Join(args[2:], " "), stderr.String())
	}
	_, _ = ts.Stdout().Write(stdout.Bytes())
	_, _ = ts.Stderr().Write(stderr.Bytes())
	got := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("run cairn: %v", err)
	}
	if got != want {
		ts.Fatalf("cairn %s: exit code %d, want %d\nstderr: %s", strings.Join(args[2:], " "), got, want, stderr.String())
	}
}

// waitmatch FILE REGEXP [TIMEOUT]
//
// waits until FILE's content matches REGEXP (default timeout 60s).
func cmdWaitMatch(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: waitmatch FILE REGEXP [TIMEOUT]")
	}
	re, err := regexp.Compile("(?m)" + args[1])
	ts.Check(err)
	timeout := 60 * time.Second
	if len(args) == 3 {
		timeout, err = time.ParseDuration(args[2])
		ts.Check(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		b, _ := os.ReadFile(ts.MkAbs(args[0]))
		if re.Match(b) {
			return
		}
		select {
		case <-ctx.Done():
			ts.Fatalf("%s did not match %q within %v; it has:\n%s", args[0], args[1], timeout, b)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// envfrom NAME FILE REGEXP
//
// sets $NAME to the first submatch of REGEXP in FILE ("stdout" and
// "stderr" name the last command's output).
func cmdEnvFrom(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: envfrom NAME FILE REGEXP")
	}
	re, err := regexp.Compile("(?m)" + args[2])
	ts.Check(err)
	m := re.FindStringSubmatch(ts.ReadFile(args[1]))
	if len(m) < 2 {
		ts.Fatalf("%s does not match %q", args[1], args[2])
	}
	ts.Setenv(args[0], m[1])
}
