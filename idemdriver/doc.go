// Package idemdriver is the contract between idemsql and a database: what a
// dialect contributes (the SQL of each step, the meaning of its driver's
// errors, what its server can do) and how a store reaches a pool of
// connections ([Driver], [Tx], [Executor]). Applications do not need it:
// they pass a dialect package's constructor (idempostgres.New,
// idemmysql.New, idemsqlite.New) to idemsql.New. It is for whoever adds a
// database, or a driver, the way database/sql/driver is for database/sql.
// [SQL] is the driver of any database/sql pool, with prepared statements.
//
// A dialect is a [Dialect] (its statements and error meanings) and may
// implement capability interfaces the core asks for: [LeaseDialect] and
// [InspectDialect] (lease mode and the read API), [ClaimBounder] (bounded
// lock waits, fail-fast claims), [TxChecker], [LockTimeoutEnder],
// [EarlyVisibility], [SchemaSupport], [StatementPreparer] and [Inliner]; a
// [Tx], [ExecCommitter]. Every guarantee the statements must keep is stated
// on the field that holds them; integration/ in the repository holds the
// conformance suite that checks them on real servers.
package idemdriver
