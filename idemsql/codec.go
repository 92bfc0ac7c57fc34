package idemsql

import "encoding/json"

// Codec encodes fn's result for storage and decodes it for a replay. The
// encoding goes into a JSON column: it must be JSON.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec: encoding/json. The library recognises it by
// its type, so assigning another codec to this variable does not make that
// codec the default; use [WithCodec].
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
