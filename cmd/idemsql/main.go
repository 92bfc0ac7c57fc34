// Command idemsql inspects and maintains idemsql's idempotency table on
// PostgreSQL, MySQL/MariaDB and SQLite: it creates the table (migrate),
// lists and shows keys (ls, show), counts them (stats), deletes expired
// ones (purge) and resolves claims whose holder died (sweep).
//
//	go install ./cmd/idemsql    # in a clone, until the module's first release
//	export IDEMSQL_DSN='postgres://app@db:5432/app'
//	idemsql migrate up
//	idemsql ls --lease stale
//	idemsql show 'charge:order-1'
//
// Run idemsql --help for the commands, their flags and the exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"

	"github.com/go-sql-driver/mysql"

	"github.com/idemsql/idemsql/idemsql"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK          = 0
	exitFailure     = 1   // the command failed: a database error, a missing table or schema, nothing to migrate down
	exitUsage       = 2   // bad command line: unknown command or flag, bad DSN or argument
	exitNotFound    = 3   // show: no such key
	exitInterrupted = 130 // Ctrl-C (SIGINT) or SIGTERM; purge and sweep stop between batches
)

const usage = `idemsql inspects and maintains idemsql's idempotency table.

Usage:
  idemsql <command> [flags] [arguments]

Commands:
  migrate up|down|status  create the table, drop it, or show its migrations
  ls                      list keys by status, lease state, age or prefix
  show KEY                show one key: state, lease, times, result, failure
  forget KEY              delete one key, unless a holder has it: it runs again
  stats                   count the rows by status and lease state
  purge                   delete completed and failed rows past their retention
  sweep                   resolve in-progress claims whose lease ran out
  help [COMMAND]          show this help, or a command's

Flags:
  --version         print the version of this build and exit
  --help            print this help

Connection flags, for every command (before or after it):
  --dsn DSN         the database; default $IDEMSQL_DSN (which keeps the
                    password out of shell history and process listings):
                      postgres://user:pass@host:5432/db?sslmode=disable
                      user:pass@tcp(host:3306)/db        (MySQL, MariaDB)
                      ./app.db, or file:app.db?_pragma=...  (SQLite)
  --dialect NAME    postgres, mysql or sqlite, when the DSN's form does not
                    tell (a libpq "host=... dbname=..." string is postgres)
  --table NAME      the idempotency table (default idempotency_keys)
  --schema NAME     the table's PostgreSQL schema or MySQL database
                    (default: the connection's search_path or database)

Exit codes:
  0    success
  1    failure: a database error, a missing table or schema (migrate down
       with nothing to migrate down included), a failed batch
  2    usage: unknown command or flag, bad DSN or argument
  3    not found: show was given a key the table does not hold
  130  interrupted (Ctrl-C); purge and sweep stop between batches

Passwords are never printed: DSNs in messages have them masked.
Run 'idemsql <command> --help' for a command's flags.
`

// usageError is a bad command line: exit code 2. cmd, if set, is the
// command it is about, whose name goes before msg and whose --help to
// point to.
type usageError struct{ cmd, msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// flagMessage is the flag package's error, with flags written as the help
// and the docs write them: --name.
func flagMessage(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown flag --" + name
	}
	for _, r := range [][2]string{
		{" for flag -", " for --"},           // invalid value "x" for flag -name: ...
		{" for -", " for --"},                // invalid boolean value "x" for -name: ...
		{"argument: -", "argument: --"},      // flag needs an argument: -name
		{"boolean flag ", "boolean flag --"}, // invalid boolean flag name: ...
	} {
		if strings.Contains(msg, r[0]) {
			return strings.Replace(msg, r[0], r[1], 1)
		}
	}
	return msg
}

// exitError carries an exit code other than 1 for an error already
// reported, or one to report.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// cli is one run of the command.
type cli struct {
	stdout io.Writer
	stderr io.Writer // every message goes through red
	red    *redactor
	getenv func(string) string
	// ctx ends at the first interrupt; hard at the second. Commands that
	// work in batches (purge, sweep) run their statements under hard and
	// stop between batches once ctx has ended.
	ctx, hard context.Context
}

// redacting masks passwords in everything written through it.
type redacting struct {
	w   io.Writer
	red *redactor
}

func (r redacting) Write(p []byte) (int, error) {
	if _, err := io.WriteString(r.w, r.red.String(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// run runs the command line args (without the program name) and returns
// the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	hard, stopHard := context.WithCancel(context.Background())
	defer stopHard()
	soft, stopSoft := context.WithCancel(hard)
	defer stopSoft()
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			select {
			case <-done:
				return
			case <-sig:
				if n == 0 {
					stopSoft()
				} else {
					stopHard()
				}
			}
		}
	}()
	defer func() { close(done); wg.Wait() }()

	red := &redactor{}
	c := &cli{stdout: stdout, stderr: redacting{stderr, red}, red: red, getenv: os.Getenv, ctx: soft, hard: hard}
	// The MySQL driver logs connection trouble itself, then returns it as an
	// error, which is reported once, redacted.
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))
	err := c.main(args)
	return c.exit(err)
}

// exit reports err and picks the exit code.
func (c *cli) exit(err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var ee *exitError
	switch {
	case errors.As(err, &ue):
		prog := "idemsql"
		if ue.cmd != "" {
			prog += " " + ue.cmd
		}
		fmt.Fprintf(c.stderr, "%s: %s\nRun '%s --help' for usage.\n", prog, ue.msg, prog)
		return exitUsage
	case errors.As(err, &ee):
		if ee.err != nil && ee.err != errReported {
			fmt.Fprintf(c.stderr, "idemsql: %v\n", ee.err)
		}
		return ee.code
	case c.hard.Err() != nil || c.ctx.Err() != nil && errors.Is(err, context.Canceled):
		fmt.Fprintf(c.stderr, "idemsql: interrupted: %v\n", err)
		return exitInterrupted
	}
	fmt.Fprintf(c.stderr, "idemsql: %v\n", err)
	return exitFailure
}

// errReported is an error whose message was already written.
var errReported = errors.New("reported")

// connFlags are the connection flags every command takes.
type connFlags struct {
	dsn, dialect, table, schema string
}

func (cf *connFlags) register(fs *flag.FlagSet, def connFlags) {
	fs.StringVar(&cf.dsn, "dsn", def.dsn, "the database (default $"+dsnEnv+")")
	fs.StringVar(&cf.dialect, "dialect", def.dialect, "postgres, mysql or sqlite, when the DSN does not tell")
	fs.StringVar(&cf.table, "table", def.table, "the idempotency table")
	fs.StringVar(&cf.schema, "schema", def.schema, "the table's PostgreSQL schema or MySQL database")
}

// command is one subcommand.
type command struct {
	name  string
	usage string // its --help text
	run   func(c *cli, cf connFlags, args []string) error
}

var commands []*command

func lookupCommand(name string) *command {
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd
		}
	}
	return nil
}

func (c *cli) main(args []string) error {
	global := flag.NewFlagSet("idemsql", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	var cf connFlags
	cf.register(global, connFlags{table: idemsql.DefaultTable})
	version := global.Bool("version", false, "")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, usage)
			return nil
		}
		return usagef("%s", flagMessage(err))
	}
	if *version {
		fmt.Fprintln(c.stdout, versionLine())
		return nil
	}
	rest := global.Args()
	if len(rest) == 0 {
		fmt.Fprint(c.stderr, usage)
		return &exitError{code: exitUsage, err: errReported}
	}
	name := rest[0]
	cmd := lookupCommand(name)
	if cmd == nil {
		return usagef("unknown command %q", name)
	}
	return cmd.run(c, cf, rest[1:])
}

// versionLine says which build this is: the module's version (go install
// ...@v0.1.0), or "(devel)" from a checkout, with the commit where the
// build records it.
func versionLine() string {
	v := "(unknown)"
	var rev, modified string
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = ", modified"
				}
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return fmt.Sprintf("idemsql %s (commit %s%s, %s)", v, rev, modified, runtime.Version())
	}
	return fmt.Sprintf("idemsql %s (%s)", v, runtime.Version())
}

const helpUsage = `Usage: idemsql help [COMMAND]

Prints idemsql's usage: its commands, the connection flags and the exit
codes; or, given a command, that command's usage, as 'idemsql COMMAND
--help' does.
`

// help is a command of the table, not a case of main, so that whatever
// walks the table (help COMMAND, the tests) sees it too.
func init() {
	commands = append(commands, &command{name: "help", usage: helpUsage, run: runHelp})
}

func runHelp(c *cli, _ connFlags, args []string) error {
	fs := flag.NewFlagSet("idemsql help", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, helpUsage)
			return nil
		}
		return &usageError{cmd: "help", msg: flagMessage(err)}
	}
	switch args := fs.Args(); len(args) {
	case 0:
		fmt.Fprint(c.stdout, usage)
	case 1:
		cmd := lookupCommand(args[0])
		if cmd == nil {
			return usagef("unknown command %q", args[0])
		}
		fmt.Fprint(c.stdout, cmd.usage)
	default:
		return &usageError{cmd: "help", msg: fmt.Sprintf("at most one COMMAND, got %q", args)}
	}
	return nil
}

// flags returns a command's flag set with the connection flags, defaulting
// to those given before the command and to $IDEMSQL_DSN.
func (c *cli) flags(cmd string, cf *connFlags, def connFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("idemsql "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cf.register(fs, def)
	return fs
}

// parse parses a command's flags, which may come before, between and after
// its arguments (a lone "--" ends the flags), and returns the arguments.
// --help prints the command's usage.
func (c *cli) parse(fs *flag.FlagSet, cf *connFlags, help string, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(c.stdout, help)
				return nil, &exitError{code: exitOK, err: errReported}
			}
			return nil, &usageError{cmd: strings.TrimPrefix(fs.Name(), "idemsql "), msg: flagMessage(err)}
		}
		rest := fs.Args()
		consumed := args[:len(args)-len(rest)]
		if len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if cf.dsn == "" {
		cf.dsn = c.getenv(dsnEnv)
	}
	return positional, nil
}

// connect opens the database named by the connection flags.
func (c *cli) connect(cf connFlags, create bool) (*conn, error) {
	return open(c.ctx, cf, c.red, create)
}

// wantArgs checks the number of arguments.
func wantArgs(fs *flag.FlagSet, args []string, names ...string) error {
	cmd := strings.TrimPrefix(fs.Name(), "idemsql ")
	switch {
	case len(args) == len(names):
		return nil
	case len(names) == 0 && len(args) == 1:
		return &usageError{cmd: cmd, msg: fmt.Sprintf("unexpected argument %q", args[0])}
	case len(names) == 0:
		return &usageError{cmd: cmd, msg: fmt.Sprintf("unexpected arguments %q", args)}
	}
	return &usageError{cmd: cmd, msg: fmt.Sprintf("want %s, got %q", strings.Join(names, " "), args)}
}
