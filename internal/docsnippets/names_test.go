package docsnippets

import (
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Every name a user of package idemsql meets in go doc is explained where
// a user reads first: README.md or docs/guide.md. Methods count as
// Type.Method.
func TestEveryNameIsDocumented(t *testing.T) {
	fset := token.NewFileSet()
	sources, err := filepath.Glob("../../idemsql/*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, src := range sources {
		if strings.HasSuffix(src, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, src, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	d, err := doc.NewFromFiles(fset, files, "github.com/idemsql/idemsql/idemsql")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	values := func(vs []*doc.Value) {
		for _, v := range vs {
			names = append(names, v.Names...)
		}
	}
	values(d.Consts)
	values(d.Vars)
	for _, f := range d.Funcs {
		names = append(names, f.Name)
	}
	for _, typ := range d.Types {
		names = append(names, typ.Name)
		values(typ.Consts)
		values(typ.Vars)
		for _, f := range typ.Funcs {
			names = append(names, f.Name)
		}
		for _, m := range typ.Methods {
			names = append(names, typ.Name+"."+m.Name)
		}
	}
	if len(names) < 40 {
		t.Fatalf("only %d names found: %v", len(names), names)
	}
	var text strings.Builder
	for _, f := range []string{"../../README.md", "../../docs/guide.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text.Write(b)
	}
	docs := text.String()
	var missing []string
	for _, n := range names {
		if !containsWord(docs, n) {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%d names of package idemsql appear in neither README.md nor docs/guide.md: %s", len(missing), strings.Join(missing, " "))
	}
}

// containsWord reports whether name occurs in text with no letter, digit
// or underscore on either side. (A regular expression per name took 15 s
// under the race detector.)
func containsWord(text, name string) bool {
	word := func(b byte) bool {
		return b == '_' || '0' <= b && b <= '9' || 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z'
	}
	for i := 0; ; {
		j := strings.Index(text[i:], name)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(name)
		if (start == 0 || !word(text[start-1])) && (end == len(text) || !word(text[end])) {
			return true
		}
		i = start + 1
	}
}
