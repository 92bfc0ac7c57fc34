package idemhttp

import (
	"encoding/json"
	"net/http"
)

// A problem is an answer of the middleware itself, sent as
// application/problem+json (RFC 9457). Its type is Config.ProblemBaseURL
// + "#" + name.
type problem struct {
	name       string
	status     int
	title      string
	retryAfter bool // Retry-After: 1
}

var (
	problemMissingKey = problem{name: "missing-key", status: http.StatusBadRequest,
		title: "Idempotency-Key is missing"}
	problemInvalidKey = problem{name: "invalid-key", status: http.StatusBadRequest,
		title: "Idempotency-Key is not a valid key"}
	problemBodyTooLarge = problem{name: "body-too-large", status: http.StatusRequestEntityTooLarge,
		title: "The request body is too large"}
	problemBodyUnreadable = problem{name: "body-unreadable", status: http.StatusBadRequest,
		title: "The request body could not be read"}
	problemNoPrincipal = problem{name: "no-principal", status: http.StatusForbidden,
		title: "The request has no principal to scope its Idempotency-Key"}
	problemKeyReused = problem{name: "key-reused", status: http.StatusUnprocessableEntity,
		title: "Idempotency-Key is already used for another request"}
	problemInFlight = problem{name: "in-flight", status: http.StatusConflict,
		title: "A request with this Idempotency-Key is still being processed", retryAfter: true}
	problemRetry = problem{name: "retry", status: http.StatusServiceUnavailable,
		title: "The request was not completed; retry it with the same Idempotency-Key", retryAfter: true}
	problemOutcomeUnknown = problem{name: "outcome-unknown", status: http.StatusInternalServerError,
		title: "The first request with this Idempotency-Key ended without a stored response"}
	problemResponseTooLarge = problem{name: "response-too-large", status: http.StatusInternalServerError,
		title: "The response is too large to be stored"}
	problemInternal = problem{name: "internal", status: http.StatusInternalServerError,
		title: "The request could not be processed"}
)

type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// ProblemContentType is the media type of the middleware's own answers.
const ProblemContentType = "application/problem+json"

func (s *settings) sendProblem(w http.ResponseWriter, p problem, detail string) {
	body, _ := json.Marshal(problemBody{Type: s.problemBase + "#" + p.name, Title: p.title, Status: p.status, Detail: detail})
	h := w.Header()
	h.Set("Content-Type", ProblemContentType)
	if p.retryAfter {
		h.Set("Retry-After", "1")
	}
	send(w, p.status, body)
}
