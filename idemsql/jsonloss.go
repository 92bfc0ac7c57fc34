package idemsql

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

// What encoding/json would lose of a value: the checks behind the JSON
// codec's Marshal and behind canonical (keys and fingerprints).
//
// Why a walk that imitates encoding/json's field rules, and not a check
// by construction (encode, decode into a fresh value of the type, compare)
// in a fraction of the code. Both were measured (2026-12, best of 10 runs
// on a shared 2-core machine):
//
//   - Keys cannot be checked that way. DeriveKey's arguments are a []any,
//     and decoded into []any every struct comes back a map[string]any:
//     nothing says it lost a field, and comparing the two trees would need
//     encoding/json's field names, the imitation again (decoding each
//     argument into its own type only moves the problem to the first
//     interface below, a map[string]any{"p": priv{1}}). A prototype
//     accepted 26 of the 31 lossy argument lists of
//     TestDeriveKeyRefusesLossyArgs (priv{1} and priv{2} shared a key
//     again). Nor can a round trip refuse by type: a zero value loses
//     nothing, so it would take priv2{} and collides{}, which are refused
//     here so that a test with zero values finds the mistake before
//     production data does; and it would refuse good keys that encode
//     without loss but do not decode (an embedded pointer to an unexported
//     type, a type with MarshalJSON and no UnmarshalJSON). A canonical
//     encoder of our own, lossless by design, would have to write what
//     encoding/json writes (the golden keys depend on it), by its rules.
//   - For results, where a round trip would work, the decode is the cost:
//     encoding/json decodes a small struct at 6 to 10 times the cost of
//     encoding it. Marshal of BenchmarkJSONCodec's five-field result took
//     3.3 µs and 12 allocations with a round trip, against 0.45 µs and 1
//     with this check (0.35 µs with encoding/json alone); with a field of
//     type any, 7.4 µs and 31 allocations against 1.5 µs and 6; the
//     two-field result of BenchmarkDoNopExecutor, 2.1 µs and 8 against
//     0.27 µs and 1, where Do's whole first call is about 2 µs and 17
//     allocations. The walk allocates nothing, and for a type with nothing
//     to lose but invalid UTF-8 it is skipped after one look for \ufffd in
//     the encoding.
//   - The walk names the place and the reason ("args[0].Customer.id: field
//     id of app.customer is unexported"); a comparison knows only where
//     two values differ.
//
// The rules imitated are those of typeFields and newTypeEncoder in
// encoding/json's encode.go; key_test.go and codec_test.go hold the walk
// to them case by case.

// checkJSONLoss reports where v's encoding by encoding/json, data, loses
// information, naming the place from root ("args[0].Name"). replay adds
// the checks that matter when the encoding is decoded back into v's type.
// Call it after json.Marshal(v) succeeded, which rules out cycles.
func checkJSONLoss(v any, data []byte, root string, replay bool) error {
	return checkJSONLossHeld(v, data, root, replay, false)
}

// checkJSONLossHeld is checkJSONLoss for a v that, with held, is the value
// of an interface type (a result of type any): a replay decodes it as
// encoding/json decodes into an interface.
func checkJSONLossHeld(v any, data []byte, root string, replay, held bool) error {
	// encoding/json writes invalid UTF-8 as the escape \ufffd, and U+FFFD
	// itself as it is: without the escape's text in data, every string is
	// valid. (With it, the walk checks them: the text may be a string's own.)
	w := lossWalker{replay: replay, validUTF8: !bytes.Contains(data, []byte(`\ufffd`))}
	walk := w.walkAny
	if held {
		walk = w.walkHeld
	}
	if le := walk(v); le != nil {
		return le.withRoot(root)
	}
	return nil
}

// lossError is where and why an encoding loses information. The path is
// built while the walk unwinds, innermost segment first.
type lossError struct {
	segments []string
	reason   string
}

func (e *lossError) at(segment string) *lossError {
	e.segments = append(e.segments, segment)
	return e
}

func (e *lossError) withRoot(root string) error {
	var b strings.Builder
	b.WriteString(root)
	for _, s := range slices.Backward(e.segments) {
		b.WriteString(s)
	}
	return fmt.Errorf("%s: %s", b.String(), e.reason)
}

var (
	marshalerType     = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
	isZeroerType      = reflect.TypeFor[interface{ IsZero() bool }]()
)

// jsonFacts is what the walk needs to know of a type, computed once.
type jsonFacts struct {
	typ reflect.Type
	// plain: no value of the type can lose information; nothing to walk.
	plain bool
	// stringsOnly: a value of the type can lose information only in a string
	// or map key that is not valid UTF-8, which leaves a \ufffd escape in
	// the encoding; without one, there is nothing to walk.
	stringsOnly bool
	// trusted: the type implements json.Marshaler or encoding.TextMarshaler,
	// whose output is taken as it is.
	trusted bool
	// addrTrusted: only the pointer type does, and encoding/json calls it
	// on addressable values.
	addrTrusted bool
	// decodes: the type or its pointer implements json.Unmarshaler or
	// encoding.TextUnmarshaler: a replay decodes it its own way, so what
	// encoding/json alone would make of the parts it holds is not the
	// question below it.
	decodes bool
	// rawKeys: a map whose keys encoding/json writes as they are.
	rawKeys bool
	// str: a string that encoding/json writes as it is; checked in place
	// by the struct, slice or array holding it.
	str bool
	// elem: facts of the element type (pointer, slice, array, map), filled
	// on first use.
	elem atomic.Pointer[jsonFacts]
	// Structs: the fields encoding/json writes, or why every value of the
	// struct type loses information.
	fields []*jsonField
	lossy  *structLoss
}

func (f *jsonFacts) elemFacts() *jsonFacts {
	if e := f.elem.Load(); e != nil {
		return e
	}
	e := jsonFactsOf(f.typ.Elem())
	f.elem.Store(e)
	return e
}

// jsonField is a struct field that encoding/json writes.
type jsonField struct {
	index []int  // reflect's field index, through embedded structs
	sel   string // Go selector from the outer struct: "Base.ID"
	typ   reflect.Type
	plain bool
	// skipIfZero: tagged omitzero without an IsZero method, so a zero value
	// is left out.
	skipIfZero bool
	// unsettable: index[:unsettable] is an embedded pointer to an unexported
	// struct type (0: none), which a decoder cannot allocate.
	unsettable int
	unsetName  string
	facts      atomic.Pointer[jsonFacts]
}

func (f *jsonField) factsOf() *jsonFacts {
	if e := f.facts.Load(); e != nil {
		return e
	}
	e := jsonFactsOf(f.typ)
	f.facts.Store(e)
	return e
}

// structLoss is why every value of a struct type loses information.
type structLoss struct {
	sel    string // where, from the struct: "" or ".Base.n"
	reason string
}

var jsonFactsCache sync.Map // reflect.Type → *jsonFacts

func jsonFactsOf(t reflect.Type) *jsonFacts {
	if f, ok := jsonFactsCache.Load(t); ok {
		return f.(*jsonFacts)
	}
	f := &jsonFacts{typ: t, trusted: implementsMarshaler(t)}
	f.plain = isPlainJSON(t, false, map[reflect.Type]bool{})
	f.stringsOnly = isPlainJSON(t, true, map[reflect.Type]bool{})
	if !f.trusted && t.Kind() != reflect.Pointer {
		f.addrTrusted = implementsMarshaler(reflect.PointerTo(t))
	}
	f.str = t.Kind() == reflect.String && !f.trusted && !f.addrTrusted
	f.decodes = implementsUnmarshaler(t) || (t.Kind() != reflect.Pointer && implementsUnmarshaler(reflect.PointerTo(t)))
	switch t.Kind() {
	case reflect.Map:
		f.rawKeys = t.Key().Kind() == reflect.String
	case reflect.Struct:
		f.fields, f.lossy = jsonStructPlan(t)
		for _, fd := range f.fields {
			fd.plain = isPlainJSON(fd.typ, false, map[reflect.Type]bool{})
		}
	}
	actual, _ := jsonFactsCache.LoadOrStore(t, f)
	return actual.(*jsonFacts)
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func implementsUnmarshaler(t reflect.Type) bool {
	return t.Implements(unmarshalerType) || t.Implements(textUnmarshalerType)
}

func implementsMarshaler(t reflect.Type) bool {
	return t.Implements(marshalerType) || t.Implements(textMarshalerType)
}

// isPlainJSON reports whether no value of t can lose information, or with
// allowStrings, none but in strings and map keys, going through every type a
// value of t can hold. A type already seen counts as plain: the answer for
// the first type asked is still exact, as the walk stops at the first type
// that is not.
func isPlainJSON(t reflect.Type, allowStrings bool, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return true
	}
	seen[t] = true
	if implementsMarshaler(t) {
		return true
	}
	switch t.Kind() {
	case reflect.String:
		return allowStrings
	case reflect.Interface:
		return false
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return isPlainJSON(t.Elem(), allowStrings, seen)
	case reflect.Map:
		return (allowStrings || t.Key().Kind() != reflect.String) && isPlainJSON(t.Elem(), allowStrings, seen)
	case reflect.Struct:
		fields, lossy := jsonStructPlan(t)
		if lossy != nil {
			return false
		}
		for _, f := range fields {
			if f.unsettable != 0 || !isPlainJSON(f.typ, allowStrings, seen) {
				return false
			}
		}
	}
	return true
}

// jsonStructPlan lists the fields of struct type t that encoding/json
// writes, as its typeFields does, or says why it loses information: an
// unexported field, or two fields under one JSON name (encoding/json
// writes the dominant one, or neither). Fields tagged json:"-" are the
// caller's choice, and unexported fields that hold nothing (blank or of
// zero size) lose nothing: both are skipped.
func jsonStructPlan(t reflect.Type) ([]*jsonField, *structLoss) {
	var (
		fields []*jsonField
		loss   *structLoss
		names  = map[string]*jsonField{}
	)
	var collect func(st reflect.Type, index []int, sel string, unsettable int, unsetName string, path []reflect.Type)
	collect = func(st reflect.Type, index []int, sel string, unsettable int, unsetName string, path []reflect.Type) {
		for i := range st.NumField() {
			if loss != nil {
				return
			}
			sf := st.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			if !sf.IsExported() && (sf.Name == "_" || sf.Type.Size() == 0) {
				// Holds nothing: padding, or a marker such as noCopy.
				continue
			}
			ft := sf.Type
			if sf.Anonymous {
				et := ft
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if !sf.IsExported() && et.Kind() != reflect.Struct {
					loss = &structLoss{sel: "." + sel + sf.Name, reason: fmt.Sprintf(
						"embedded field %s of %v is unexported, and encoding/json leaves it out; export it, or tag it json:\"-\" to leave it out on purpose",
						sf.Name, st)}
					return
				}
			} else if !sf.IsExported() {
				loss = &structLoss{sel: "." + sel + sf.Name, reason: fmt.Sprintf(
					"field %s of %v is unexported, and encoding/json leaves it out; export it, or tag it json:\"-\" to leave it out on purpose",
					sf.Name, st)}
				return
			}
			name, opts, _ := strings.Cut(tag, ",")
			if !isValidJSONTag(name) {
				name = ""
			}
			idx := append(index[:len(index):len(index)], i)
			if ft.Name() == "" && ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if name != "" || !sf.Anonymous || ft.Kind() != reflect.Struct {
				if name == "" {
					name = sf.Name
				}
				f := &jsonField{index: idx, sel: sel + sf.Name, typ: sf.Type,
					unsettable: unsettable, unsetName: unsetName}
				if tagOption(opts, "omitzero") {
					f.skipIfZero = !sf.Type.Implements(isZeroerType) &&
						!reflect.PointerTo(sf.Type).Implements(isZeroerType)
				}
				if other, ok := names[name]; ok {
					loss = &structLoss{reason: fmt.Sprintf(
						"fields %s and %s of %v both have the JSON name %q, and encoding/json writes at most one; give one another name or tag it json:\"-\"",
						other.sel, f.sel, t, name)}
					return
				}
				names[name] = f
				fields = append(fields, f)
				continue
			}
			// An embedded struct: encoding/json writes its fields as the
			// outer struct's.
			if slices.Contains(path, ft) {
				loss = &structLoss{sel: "." + sel + sf.Name, reason: fmt.Sprintf(
					"%v embeds itself, and encoding/json writes only the outermost level", ft)}
				return
			}
			u, un := unsettable, unsetName
			if u == 0 && sf.Type.Kind() == reflect.Pointer && !sf.IsExported() {
				u, un = len(idx), sel+sf.Name
			}
			collect(ft, idx, sel+sf.Name+".", u, un, append(path, ft))
		}
	}
	collect(t, nil, "", 0, "", []reflect.Type{t})
	if loss != nil {
		return nil, loss
	}
	return fields, nil
}

// isValidJSONTag is encoding/json's rule for a usable name in a json tag.
func isValidJSONTag(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			return false
		}
	}
	return true
}

func tagOption(opts, name string) bool {
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		if o == name {
			return true
		}
	}
	return false
}

// lossWalker goes through a value as encoding/json encodes it.
type lossWalker struct {
	replay bool
	// validUTF8: every string in the value is known to be valid UTF-8.
	validUTF8 bool
	// depth and seen guard against cycles the way encoding/json does: a
	// walk this deep starts remembering what it went through.
	depth int
	seen  map[any]struct{}
}

const lossCycleDepth = 1000

// skips reports whether a value with facts f needs no look.
func (w *lossWalker) skips(f *jsonFacts) bool {
	return f.plain || (f.stringsOnly && w.validUTF8)
}

// walk checks v, whose type's facts are f. addr is whether encoding/json
// can take v's address, which decides whether it calls a marshaling method
// with a pointer receiver. (v.CanAddr may differ: map entries are read
// into addressable values.)
func (w *lossWalker) walk(v reflect.Value, f *jsonFacts, addr bool) *lossError {
	if w.skips(f) || f.trusted || (f.addrTrusted && addr) {
		return nil
	}
	if w.replay && f.decodes {
		w.replay = false
		defer func() { w.replay = true }()
	}
	switch v.Kind() {
	case reflect.String:
		if !utf8.ValidString(v.String()) {
			return invalidUTF8("string", v.String())
		}
	case reflect.Interface:
		if v.IsNil() {
			return nil
		}
		if v.CanInterface() {
			return w.walkHeld(v.Interface())
		}
		e := v.Elem()
		return w.walk(e, jsonFactsOf(e.Type()), false)
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		if le := w.enter(v); le != nil {
			return le
		}
		le := w.walk(v.Elem(), f.elemFacts(), true)
		w.leave(v)
		return le
	case reflect.Array:
		return w.walkElems(v, f.elemFacts(), addr)
	case reflect.Slice:
		if v.Len() == 0 {
			return nil
		}
		if le := w.enter(v); le != nil {
			return le
		}
		le := w.walkElems(v, f.elemFacts(), true)
		w.leave(v)
		return le
	case reflect.Map:
		if v.Len() == 0 {
			return nil
		}
		if le := w.enter(v); le != nil {
			return le
		}
		le := w.walkMap(v, f)
		w.leave(v)
		return le
	case reflect.Struct:
		if f.lossy != nil {
			reason := f.lossy.reason
			if f.addrTrusted {
				reason += fmt.Sprintf(" (the marshaling method of %v has a pointer receiver, and encoding/json calls it only on a value it can take the address of: pass a pointer)", v.Type())
			}
			return &lossError{segments: []string{f.lossy.sel}, reason: reason}
		}
	fields:
		for _, fd := range f.fields {
			// Most fields need no look: decide before reaching them.
			if fd.plain && (fd.unsettable == 0 || !w.replay) {
				continue
			}
			ff := fd.factsOf()
			if w.skips(ff) && (fd.unsettable == 0 || !w.replay) {
				continue
			}
			fv, fieldAddr := v, addr
			for i, x := range fd.index {
				if fv.Kind() == reflect.Pointer {
					if fv.IsNil() {
						continue fields
					}
					if w.replay && i == fd.unsettable {
						return &lossError{segments: []string{"." + fd.unsetName}, reason: fmt.Sprintf(
							"%v embeds %v, a pointer to an unexported struct type, whose fields encoding/json writes but cannot set on a replay; export the type or embed it by value",
							v.Type(), fv.Type())}
					}
					fv, fieldAddr = fv.Elem(), true
				}
				fv = fv.Field(x)
			}
			if w.skips(ff) || (fd.skipIfZero && fv.IsZero()) {
				continue
			}
			if ff.str {
				if !utf8.ValidString(fv.String()) {
					return invalidUTF8("string", fv.String()).at("." + fd.sel)
				}
				continue
			}
			if le := w.walk(fv, ff, fieldAddr); le != nil {
				return le.at("." + fd.sel)
			}
		}
	}
	return nil
}

// walkHeld checks the value an interface holds. A replay decodes into the
// interface what encoding/json makes of JSON without a type: nil, bool,
// float64, string, []any or map[string]any. A value of any other type
// would come back as another type (an int as a float64, a []byte as a
// base64 string, a struct as a map), and a large integer as another number.
func (w *lossWalker) walkHeld(v any) *lossError {
	if w.replay {
		switch v := v.(type) {
		case nil, bool, float64, string:
		case []any:
			if v == nil { // null: replays as a nil interface
				return heldLoss(v)
			}
		case map[string]any:
			if v == nil {
				return heldLoss(v)
			}
		default:
			return heldLoss(v)
		}
	}
	return w.walkAny(v)
}

func heldLoss(v any) *lossError {
	return &lossError{reason: fmt.Sprintf("a %T held by an interface type would replay as what encoding/json decodes into an interface "+
		"(nil, bool, float64, string, []any or map[string]any): use a concrete type for the field", v)}
}

// walkAny checks the value an interface holds, which encoding/json cannot
// take the address of. The types that decoded JSON is made of are checked
// without reflection.
func (w *lossWalker) walkAny(v any) *lossError {
	switch v := v.(type) {
	case nil, bool, float64, int, int64, json.Number:
		return nil
	case string:
		if w.validUTF8 || utf8.ValidString(v) {
			return nil
		}
		return invalidUTF8("string", v)
	case []any:
		// json.Marshal has been through every element: no cycle.
		for i, e := range v {
			if le := w.walkHeld(e); le != nil {
				return le.at("[" + strconv.Itoa(i) + "]")
			}
		}
		return nil
	case map[string]any:
		for k, e := range v {
			if !w.validUTF8 && !utf8.ValidString(k) {
				return invalidUTF8("map key", k).at("[" + strconv.Quote(k) + "]")
			}
			if le := w.walkHeld(e); le != nil {
				return le.at("[" + strconv.Quote(k) + "]")
			}
		}
		return nil
	}
	rv := reflect.ValueOf(v)
	return w.walk(rv, jsonFactsOf(rv.Type()), false)
}

func (w *lossWalker) walkElems(v reflect.Value, ef *jsonFacts, addr bool) *lossError {
	for i := range v.Len() {
		e := v.Index(i)
		var le *lossError
		if ef.str {
			if !utf8.ValidString(e.String()) {
				le = invalidUTF8("string", e.String())
			}
		} else {
			le = w.walk(e, ef, addr)
		}
		if le != nil {
			return le.at("[" + strconv.Itoa(i) + "]")
		}
	}
	return nil
}

func (w *lossWalker) walkMap(v reflect.Value, f *jsonFacts) *lossError {
	ef := f.elemFacts()
	var it reflect.MapIter
	it.Reset(v)
	// Entries are read into k and e, which saves an allocation per entry.
	var k, e reflect.Value
	checkKeys, checkValues := f.rawKeys && !w.validUTF8, !w.skips(ef)
	if checkKeys {
		k = reflect.New(v.Type().Key()).Elem()
	}
	if checkValues {
		e = reflect.New(v.Type().Elem()).Elem()
	}
	for it.Next() {
		if checkKeys {
			k.SetIterKey(&it)
			if !utf8.ValidString(k.String()) {
				return invalidUTF8("map key", k.String()).at(mapKeySegment(k))
			}
		}
		if checkValues {
			e.SetIterValue(&it)
			if le := w.walk(e, ef, false); le != nil {
				return le.at(mapKeySegment(it.Key()))
			}
		}
	}
	return nil
}

// enter counts a level of pointer, slice or map and, past lossCycleDepth,
// refuses one met again on the way down.
func (w *lossWalker) enter(v reflect.Value) *lossError {
	w.depth++
	if w.depth <= lossCycleDepth {
		return nil
	}
	if w.seen == nil {
		w.seen = map[any]struct{}{}
	}
	k := cycleKey(v)
	if _, ok := w.seen[k]; ok {
		return &lossError{reason: fmt.Sprintf("encountered a cycle via %v", v.Type())}
	}
	w.seen[k] = struct{}{}
	return nil
}

func (w *lossWalker) leave(v reflect.Value) {
	if w.depth > lossCycleDepth {
		delete(w.seen, cycleKey(v))
	}
	w.depth--
}

func cycleKey(v reflect.Value) any {
	type sliceKey struct {
		ptr uintptr
		len int
	}
	if v.Kind() == reflect.Slice {
		return sliceKey{v.Pointer(), v.Len()}
	}
	return v.Pointer()
}

func mapKeySegment(k reflect.Value) string {
	if k.Kind() == reflect.String {
		return "[" + strconv.Quote(k.String()) + "]"
	}
	return fmt.Sprintf("[%v]", k)
}

func invalidUTF8(what, s string) *lossError {
	return &lossError{reason: fmt.Sprintf(
		"%s is not valid UTF-8 (byte %d), and encoding/json would write U+FFFD in its place", what, invalidUTF8At(s))}
}

// invalidUTF8At is the offset of the first invalid byte in s.
func invalidUTF8At(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return i
			}
		}
	}
	return -1
}
