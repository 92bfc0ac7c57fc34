package idemhttp

import (
	"bytes"
	"errors"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"unicode/utf8"
)

// Response is a stored response: what a replay sends. It is the result the
// middleware stores with idemsql, as JSON: a body that is UTF-8 text is
// stored as a string (readable with the database's JSON functions), any
// other as base64.
type Response struct {
	Status     int         `json:"status"`
	Header     http.Header `json:"header,omitempty"`
	Body       string      `json:"body,omitempty"`
	BodyBase64 []byte      `json:"body_base64,omitempty"`
}

// ErrResponseTooLarge is what the handler's Write returns once the response
// body passes Config.MaxResponseBytes. Nothing is stored and the client gets
// 500.
var ErrResponseTooLarge = errors.New("idemhttp: response larger than Config.MaxResponseBytes")

// capture is the ResponseWriter the handler writes to: everything is held
// until the transaction's outcome is known.
type capture struct {
	header   http.Header
	status   int
	body     *bytes.Buffer
	max      int
	overflow bool
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// pooledMax is the largest buffer kept for reuse; larger ones are left to
// the garbage collector rather than pinned in the pool.
const pooledMax = 64 << 10

func getBuf() *bytes.Buffer { b := bufPool.Get().(*bytes.Buffer); b.Reset(); return b }

func putBuf(b *bytes.Buffer) {
	if b != nil && b.Cap() <= pooledMax {
		bufPool.Put(b)
	}
}

func newCapture(outer http.Header, max int) *capture {
	// The handler sees the headers set by middleware outside this one, as
	// it would on the real writer.
	return &capture{header: outer.Clone(), body: getBuf(), max: max}
}

func (c *capture) Header() http.Header { return c.header }

func (c *capture) WriteHeader(status int) {
	if c.status != 0 || (status >= 100 && status < 200) {
		return // informational answers are not the response; later calls are ignored, as net/http does
	}
	c.status = status
}

func (c *capture) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	if c.overflow || c.body.Len()+len(p) > c.max {
		c.overflow = true
		return 0, ErrResponseTooLarge
	}
	return c.body.Write(p)
}

// finalStatus is the status sent: 200 when the handler wrote nothing.
func (c *capture) finalStatus() int {
	if c.status == 0 {
		return http.StatusOK
	}
	return c.status
}

// sniff sets Content-Type as net/http would for this body, so that the
// stored response carries it.
func (c *capture) sniff() {
	if _, set := c.header["Content-Type"]; !set && c.body.Len() > 0 && bodyAllowed(c.finalStatus()) {
		c.header.Set("Content-Type", http.DetectContentType(c.body.Bytes()))
	}
}

// stored is the response to store: the status, the replayed headers, the
// body.
func (c *capture) stored(replay []string) Response {
	r := Response{Status: c.finalStatus()}
	for _, h := range replay {
		if v, ok := c.header[h]; ok {
			if r.Header == nil {
				r.Header = make(http.Header, len(replay))
			}
			r.Header[h] = v
		}
	}
	b := c.body.Bytes()
	switch {
	case len(b) == 0:
	case utf8.Valid(b) && bytes.IndexByte(b, 0) < 0: // PostgreSQL's JSON cannot hold NUL
		r.Body = string(b)
	default:
		r.BodyBase64 = bytes.Clone(b)
	}
	return r
}

func (c *capture) release() {
	putBuf(c.body)
	c.body = nil
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// send writes a response to the real writer: status, headers, body.
func send(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	if bodyAllowed(status) {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	} else {
		h.Del("Content-Length")
		body = nil
	}
	w.WriteHeader(status)
	if len(body) > 0 {
		_, _ = w.Write(body)
	}
}

// sendCaptured sends the handler's own response, every header included.
func sendCaptured(w http.ResponseWriter, c *capture) {
	h := w.Header()
	clear(h)
	maps.Copy(h, c.header)
	send(w, c.finalStatus(), c.body.Bytes())
}

// sendReplay sends a stored response, marked as a replay.
func sendReplay(w http.ResponseWriter, r Response, replayedHeader string) {
	h := w.Header()
	maps.Copy(h, r.Header)
	h.Set(replayedHeader, "true")
	body := r.BodyBase64
	if body == nil && r.Body != "" {
		body = []byte(r.Body)
	}
	send(w, r.Status, body)
}
