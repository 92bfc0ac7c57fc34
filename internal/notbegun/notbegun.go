// Package notbegun holds the error by which idemhttp's lease-mode
// middleware tells idemsql.RunExternal that its handler began nothing
// (idemhttp.NotBegun): the holder of a claim that no one held before it
// then deletes the claim instead of releasing it, so that the key is free
// for any request, not only for the same one again.
package notbegun

import "errors"

// Err is matched, with errors.Is, in the error fn returns.
var Err = errors.New("idemhttp: the handler began nothing")
