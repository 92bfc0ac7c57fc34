package idemsql

// Canonical is the canonical JSON that DeriveKey and Fingerprint hash, for
// the tests that hold it to its golden vectors.
func Canonical(v any) ([]byte, error) { return canonical(v, "value") }
