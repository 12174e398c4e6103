package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes (documented in the package comment and in `cairn --help`).
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitBadInput    = 3
	exitOffline     = 4
	exitLost        = 5
	exitInterrupted = 130
)

const exitCodesHelp = `Exit codes:
  0    success
  1    failure: an operation failed (disk, network, a relay that would not start)
  2    usage: unknown command or flag, wrong arguments, a malformed flag value
  3    bad input: an invite, a config file, a contact or message ID that is not
       valid or not known, a home directory that is not initialised
  4    offline: no relay could be reached, or a sent message is still queued
       (it stays in the outbox and goes out with the next online command)
  5    lost: the testnet demo found a message sent and not delivered
  130  interrupted (SIGINT or SIGTERM) before the command finished`

// exitError is an error with the exit code it stands for.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func usageErrorf(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

func inputErrorf(format string, args ...any) error {
	return withCode(exitBadInput, fmt.Errorf(format, args...))
}

func offlineErrorf(format string, args ...any) error {
	return withCode(exitOffline, fmt.Errorf(format, args...))
}

// errInterrupted is returned by commands cut short by SIGINT or SIGTERM.
var errInterrupted = withCode(exitInterrupted, errors.New("interrupted"))

// app holds what every command shares: the standard streams and the global
// flags.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	logLevel       string
	logFormat      string
}

// run executes the command line and returns the process exit code.
func run(args []string) (code int) {
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	defer func() {
		// A bug is one line too, unless its stack is asked for.
		if r := recover(); r != nil {
			if os.Getenv("CAIRN_TRACEBACK") != "" {
				panic(r)
			}
			fmt.Fprintf(a.stderr, "cairn: internal error: %s (a bug: please report it; CAIRN_TRACEBACK=1 shows where)\n", oneLine(fmt.Sprint(r)))
			code = exitFailure
		}
	}()
	root := a.rootCmd()
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code = exitFailure
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case isCobraUsage(err):
		code = exitUsage
	}
	if code == exitInterrupted && ctx.Err() == nil {
		code = exitFailure
	}
	fmt.Fprintf(a.stderr, "cairn: %s\n", oneLine(err.Error()))
	return code
}

// isCobraUsage recognises the errors cobra itself returns for a bad
// command line (unknown commands; flags are routed through flagError).
func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "unknown shorthand flag") || strings.Contains(s, "accepts ") ||
		strings.HasPrefix(s, "required flag")
}

// oneLine folds a multi-line message into one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	return strings.Join(fields, "; ")
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cairn",
		Short: "End-to-end encrypted store-and-forward messaging over a relay network",
		Long: `cairn is a peer-to-peer, end-to-end encrypted, store-and-forward messaging relay
network. This one binary runs a relay (cairn relay), a local cluster for
developers (cairn testnet), and a command-line client over a home directory
(cairn init, invite, contact add, send, sync, inbox, watch, status).

Results go to stdout, logs and progress to stderr; errors are one line.

` + exitCodesHelp,
		Example: `  # The quick tour: a local cluster, two users, a relay killed, a tally.
  cairn testnet demo

  # Run a relay.
  cairn relay --data-dir /var/lib/cairn --metrics-addr 127.0.0.1:9100

  # Be a user.
  cairn init --name alice --relay /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...
  cairn invite
  cairn contact add bob cairn1...
  cairn send bob "hello"`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		DisableAutoGenTag: true,
		Args:              noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.DisableSuggestions = true
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf("%s: %v (see '%s --help')", c.CommandPath(), err, c.CommandPath())
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.logLevel, "log-level", "", "log level: debug, info, warn or error (default: info for relay and testnet, warn otherwise)")
	pf.StringVar(&a.logFormat, "log-format", "text", "log format: text or json (slog, on stderr)")
	root.AddCommand(
		a.relayCmd(),
		a.testnetCmd(),
		a.initCmd(),
		a.inviteCmd(),
		a.contactCmd(),
		a.contactsCmd(),
		a.sendCmd(),
		a.syncCmd(),
		a.inboxCmd(),
		a.watchCmd(),
		a.statusCmd(),
	)
	return root
}

// noArgs is cobra.NoArgs with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.HasSubCommands() {
			return usageErrorf("unknown command %q for %q (see '%s --help')", args[0], cmd.CommandPath(), cmd.CommandPath())
		}
		return usageErrorf("%s takes no arguments, got %q (see '%s --help')", cmd.CommandPath(), args[0], cmd.CommandPath())
	}
	return nil
}

// exactArgs is cobra.ExactArgs with a usage error naming the arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageErrorf("%s needs %s, got %d argument(s) (see '%s --help')", cmd.CommandPath(), strings.Join(names, " "), len(args), cmd.CommandPath())
		}
		return nil
	}
}

// logger builds the slog logger of the global flags; def is the command's
// default level.
func (a *app) logger(def slog.Level) (*slog.Logger, error) {
	level := def
	switch strings.ToLower(a.logLevel) {
	case "":
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return nil, usageErrorf("--log-level %q: want debug, info, warn or error", a.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(a.logFormat) {
	case "text", "":
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
	default:
		return nil, usageErrorf("--log-format %q: want text or json", a.logFormat)
	}
}

// isTerminal reports whether w is a character device (a terminal): progress
// and live views are shown only then.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// interrupted turns a cancelled command context into errInterrupted.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errInterrupted
	}
	return err
}
