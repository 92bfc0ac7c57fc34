package idemsql

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sync"
)

// Codec encodes fn's result for storage and decodes it for a replay. The
// encoding goes into a JSON column: it must be JSON.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec: encoding/json, held to the promise that a
// replay returns what the first call returned.
//
// Marshal refuses a result that encoding/json would store differently from
// what fn returned, since the first caller would see one value and every
// replay another: a string (or map key) that is not valid UTF-8, which
// encoding/json stores with U+FFFD in place of the invalid bytes; a struct
// with an unexported field, which encoding/json leaves out (tag the field
// json:"-" to leave it out on purpose); two fields that encode under one
// JSON name, of which encoding/json writes at most one; a non-nil embedded
// pointer to an unexported struct type, whose fields a replay cannot set;
// a value held by an interface type (a field of type any, an element of
// []any, a result of type any) that is not what encoding/json decodes into
// an interface (nil, bool, float64, string, []any, map[string]any): an int
// would replay as a float64 (a large one as another number), a []byte as a
// base64 string, a struct as a map (below a type that decodes itself, a
// [json.Unmarshaler], that is its business). A value of a type that implements [json.Marshaler] or
// [encoding.TextMarshaler] is taken as that method encodes it.
//
// Unmarshal is strict: a stored field that the result type does not have
// is an error ([ErrDecode]), not a zero value, so a replay never silently
// drops part of the answer. Use [LenientJSON] when the result type is
// meant to change between deployments.
//
// The library recognises the built-in codecs by their type, so assigning
// another codec to this variable does not make that codec the default; use
// [Options.Codec].
var JSON Codec = jsonCodec{}

// LenientJSON is [JSON] except that Unmarshal ignores a stored field the
// result type does not have, as encoding/json does by default. Use it,
// with [Options.Codec], when result types evolve on purpose: a field removed
// in a new deployment must not make the results stored by the old one
// fail to replay. A field added to the result type replays as its zero
// value with either codec. Marshal refuses the same results as JSON's.
var LenientJSON Codec = jsonCodec{lenient: true}

// jsonCodec is the built-in codec. [Options.Codec] recognises it by its type:
// keep it a comparable struct.
type jsonCodec struct {
	lenient bool // decode ignoring unknown fields
}

func (jsonCodec) Marshal(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	// After json.Marshal, which has refused cycles and unsupported types.
	if err := checkJSONLoss(v, data, "result", true); err != nil {
		return nil, err
	}
	return data, nil
}

func (c jsonCodec) Unmarshal(data []byte, v any) error {
	if c.lenient {
		return json.Unmarshal(data, v)
	}
	return unmarshalStrict(data, v)
}

// maxPooledDecode bounds the results decoded with a pooled decoder: a
// decoder keeps a buffer as large as the longest input it read.
const maxPooledDecode = 64 << 10

// strictDecoder is a json.Decoder that disallows unknown fields, reading
// from a reader it owns so that it can be reused: a Decoder allocates
// about as much as the decoding of a small result does.
type strictDecoder struct {
	r   bytes.Reader
	dec *json.Decoder
}

var strictDecoders = sync.Pool{New: func() any {
	d := new(strictDecoder)
	d.dec = json.NewDecoder(&d.r)
	d.dec.DisallowUnknownFields()
	return d
}}

// unmarshalStrict is json.Unmarshal with unknown fields disallowed.
func unmarshalStrict(data []byte, v any) error {
	if len(data) > maxPooledDecode {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		return decodeAll(dec, v)
	}
	d := strictDecoders.Get().(*strictDecoder)
	// A decoder is reused only once it has read all of its input and has no
	// error saved: it then reads the next input as the next value of one
	// stream. Trailing white space would stay in its buffer as the start of
	// the next input, so it is left out.
	d.r.Reset(bytes.TrimRight(data, " \t\r\n"))
	start := d.dec.InputOffset()
	err := decodeAll(d.dec, v)
	d.r.Reset(nil)
	if err == nil {
		strictDecoders.Put(d)
		return nil
	}
	// A syntax error's offset counts from the start of the stream.
	var se *json.SyntaxError
	if errors.As(err, &se) {
		se.Offset -= start
	}
	return err
}

// decodeAll decodes the one JSON value the decoder's input holds.
func decodeAll(dec *json.Decoder, v any) error {
	if err := dec.Decode(v); err != nil {
		if err == io.EOF {
			return errors.New("json: no value")
		}
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("json: data after the top-level value")
	}
	return nil
}
