package main

import (
	"errors"
	"fmt"

	"github.com/idemsql/idemsql/idemsql"
)

const forgetUsage = `Usage: idemsql forget [flags] KEY

Deletes KEY's row through idemsql.Forget, so that the next call with the
key runs again as if the key had never been used: to let a customer retry
a request whose outcome was recorded, or to clear a claim that no holder
will finish. 'idemsql show KEY' shows first what the row holds.

It never frees a key that a holder has: a live lease, or a transaction
that is claiming the key now, is refused (exit code 1); try again once it
has finished, or once its lease has run out. Anything else is deleted for
good, whatever it holds: a completed key's effect happens again on the
next call; a claim whose holder died or released it, or that a sweep
abandoned, may stand for an effect that happened, and the next claim gets
a new downstream key, which the downstream system cannot match with the
old one: look there first.

Exit code 3 when the table holds no row for KEY.

Flags:
  --dsn, --dialect, --table, --schema  the connection (see idemsql --help)
`

func init() {
	commands = append(commands, &command{name: "forget", usage: forgetUsage, run: runForget})
}

func runForget(c *cli, def connFlags, args []string) error {
	var cf connFlags
	fs := c.flags("forget", &cf, def)
	args, err := c.parse(fs, &cf, forgetUsage, args)
	if err != nil {
		return err
	}
	if err := wantArgs(fs, args, "KEY"); err != nil {
		return err
	}
	key := args[0]
	if err := idemsql.ValidateKey(key); err != nil {
		return &usageError{cmd: "forget", msg: fmt.Sprintf("key %s: %v", showKey(key), err)}
	}
	db, err := c.connect(cf, false)
	if err != nil {
		return err
	}
	defer db.Close()
	notFound := &exitError{code: exitNotFound, err: fmt.Errorf("no key %s in %s", showKey(key), db.table)}
	// What the row held, for the operator; Forget decides on the row as
	// it finds it.
	r, found, err := idemsql.Lookup(c.ctx, db.store, key)
	if err != nil {
		return db.explain(err)
	}
	if !found {
		return notFound
	}
	found, err = idemsql.Forget(c.ctx, db.store, key)
	switch {
	case errors.Is(err, idemsql.ErrInProgress):
		return fmt.Errorf("%s is held (a live lease, or a transaction claiming it now): try again once it has finished or its lease has run out: %w", showKey(key), err)
	case err != nil:
		return db.explain(err)
	case !found:
		return notFound
	}
	fmt.Fprintf(c.stdout, "forgot %s (%s, attempt %d, lease %s) in %s: the next call with the key runs again\n",
		showKey(key), r.Status, r.Attempt, r.Lease, db.table)
	return nil
}
