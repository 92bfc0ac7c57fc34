package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The example is part of the test suite: whichever point worker 1 dies at,
// one charge, one invoice row and one e-mail.
func TestCreateInvoiceExample(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(points) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(points), out.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, "charges: 1 ") || !strings.Contains(l, "invoice rows: 1, e-mails: 1;") {
			t.Errorf("not one of each: %s", l)
		}
	}
	if !strings.Contains(lines[0], "API calls: 2") || !strings.Contains(lines[0], "charge×2") {
		t.Errorf("the charge that died inside was not run again under its key: %s", lines[0])
	}
}
