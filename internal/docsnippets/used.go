package docsnippets

// The snippets are functions nothing calls: they only have to compile.
var _ = []any{migrate, run, httpMiddleware, runExternal, observerSlog, lookup,
	stepsRun, stepsCompleter, wrapRun, wrapRunFingerprint, deriveKey, httpGuide, storedKey, leaseRunExternal, leaseSweep, bindTx, abortOnFailure, notBegun}
