package main

import (
	"io"
	"os"
	"testing"
)

// The README's first example prints what the README says, and its second
// request is a replay: one charge.
func TestQuickstart(t *testing.T) {
	t.Chdir(t.TempDir())
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	main()
	os.Stdout = stdout
	w.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	want := "charge #1, replayed: false\ncharge #1, replayed: true\n"
	if string(out) != want {
		t.Fatalf("the quickstart printed\n%s\nwant\n%s", out, want)
	}
}
