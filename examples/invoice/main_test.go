package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The example is part of the test suite: it fails loudly if the program
// ever stops printing the one-invoice outcome.
func TestInvoiceExample(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "Result: 1 invoice, 1 charge") {
		t.Fatalf("unexpected output:\n%s", out.String())
	}
}
