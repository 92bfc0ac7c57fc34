package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The example is part of the test suite: one charge when the payment API
// honours the downstream key (after a retry, after a crash), two when it
// does not.
func TestPaymentExample(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		"worker 1: retried with the same downstream key, the API answered ch_1",
		"worker 2: took over (attempt 2), the API answered ch_1",
		"worker 1: woke up, its completion was refused: lease lost",
		"Result: 1 charge(s) at the payment API for 2 request(s)",
		"Result: 2 charge(s) at the payment API for 2 request(s)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
	if n := strings.Count(out.String(), "Result: 1 charge(s) at the payment API for 2 request(s)"); n != 2 {
		t.Fatalf("%d scenarios with one charge, want 2:\n%s", n, out.String())
	}
}
