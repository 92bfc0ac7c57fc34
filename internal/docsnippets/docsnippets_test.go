// Package docsnippets holds the Go code that README.md and docs/*.md show,
// so that it compiles with the library it documents. Each Go block of those
// files is preceded by a marker naming its snippet,
//
//	<!-- snippet: NAME -->
//
// and the block's text must be, line for line, the region of a .go file of
// this package between "// snippet: NAME" and "// end snippet" (the common
// indentation removed). A Go block without a marker, a marker without a
// region, and a block that differs from its region all fail the test.
package docsnippets

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var (
	markerRE = regexp.MustCompile(`^<!-- snippet: ([A-Za-z0-9_-]+) -->$`)
	startRE  = regexp.MustCompile(`^\s*// snippet: ([A-Za-z0-9_-]+)$`)
	endRE    = regexp.MustCompile(`^\s*// end snippet$`)
)

// regionFiles are the files that hold snippets: this package's, the
// README's first example (a whole program, run by its own test), and the
// otel module's (a module of its own, which this one cannot import).
var regionFiles = []string{"*.go", "quickstart/*.go", "../../otel/docsnippets_test.go"}

// regions reads the snippet regions of the region files.
func regions(t *testing.T) map[string]string {
	t.Helper()
	var files []string
	for _, pattern := range regionFiles {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	out := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "docsnippets_test.go") && !strings.Contains(f, "otel") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var name string
		var lines []string
		for i, line := range strings.Split(string(b), "\n") {
			switch {
			case startRE.MatchString(line):
				if name != "" {
					t.Fatalf("%s:%d: snippet %q starts inside %q", f, i+1, startRE.FindStringSubmatch(line)[1], name)
				}
				name, lines = startRE.FindStringSubmatch(line)[1], nil
			case endRE.MatchString(line):
				if name == "" {
					t.Fatalf("%s:%d: end of a snippet that did not start", f, i+1)
				}
				if _, dup := out[name]; dup {
					t.Fatalf("%s: snippet %q defined twice", f, name)
				}
				for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
					lines = lines[:len(lines)-1] // gofmt wants a blank line before "// end snippet" after a func
				}
				out[name] = dedent(lines)
				name = ""
			case name != "":
				lines = append(lines, line)
			}
		}
		if name != "" {
			t.Fatalf("%s: snippet %q does not end", f, name)
		}
	}
	return out
}

// dedent removes the tabs every non-empty line starts with.
func dedent(lines []string) string {
	common := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, "\t"))
		if common < 0 || n < common {
			common = n
		}
	}
	var b strings.Builder
	for _, l := range lines {
		if len(l) >= common && common > 0 {
			l = l[common:]
		}
		b.WriteString(strings.TrimRight(l, " \t"))
		b.WriteByte('\n')
	}
	return b.String()
}

type block struct {
	file string
	line int
	name string
	text string
}

// blocks reads the Go blocks of a Markdown file.
func blocks(t *testing.T, path string) []block {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []block
	var marker string
	var cur *block
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case cur != nil && strings.HasPrefix(line, "```"):
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += strings.TrimRight(line, " \t") + "\n"
		case line == "```go":
			cur = &block{file: path, line: n, name: marker}
			marker = ""
		case markerRE.MatchString(line):
			marker = markerRE.FindStringSubmatch(line)[1]
		case strings.TrimSpace(line) != "":
			marker = ""
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDocumentedGoCompiles(t *testing.T) {
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	docs = append([]string{"../../README.md"}, docs...)
	regs := regions(t)
	used := map[string]bool{}
	for _, doc := range docs {
		for _, b := range blocks(t, doc) {
			where := fmt.Sprintf("%s:%d", strings.TrimPrefix(b.file, "../../"), b.line)
			if b.name == "" {
				t.Errorf("%s: a Go block without a <!-- snippet: NAME --> marker: put its code in internal/docsnippets", where)
				continue
			}
			want, ok := regs[b.name]
			if !ok {
				t.Errorf("%s: snippet %q has no region in internal/docsnippets", where, b.name)
				continue
			}
			used[b.name] = true
			if b.text != want {
				t.Errorf("%s: the block differs from snippet %q; the compiled code is:\n%s", where, b.name, want)
			}
		}
	}
	var unused []string
	for name := range regs {
		if !used[name] {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("snippets no document shows: %v", unused)
	}
}

// The key the guide prints is the one DeriveKey gives.
func TestDocumentedDerivedKey(t *testing.T) {
	key, err := deriveKey()
	if err != nil || key != "create_invoice:271eabe0f31d812d3db7b66479e281118c31a1bb9c0e4d62bee664f0801a4247" {
		t.Fatalf("DeriveKey gives %q, %v; the guide says otherwise", key, err)
	}
}
