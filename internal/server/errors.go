package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/agentry-dev/agentry/internal/pipelines"
	"github.com/agentry-dev/agentry/internal/server/store"
)

// typeKeyNotFound answers routes that do not exist; it is not one clients
// branch on, so it is not in package pipelines.
const typeKeyNotFound = "VssResourceNotFoundException"

// typeKeyInvalidOperation answers a call that the object's state forbids
// (canceling a finished job).
const typeKeyInvalidOperation = "InvalidOperationException"

// typeKeyInvalidAPIVersion answers a malformed api-version.
const typeKeyInvalidAPIVersion = "VssInvalidApiVersionException"

// eventID is the eventId Azure puts in its error bodies.
const eventID = 3000

// apiError is an error answer: an HTTP status and a WrappedException.
type apiError struct {
	status  int
	typeKey string
	message string
	// oauth is the RFC 6749 error code, for the token endpoint.
	oauth string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.typeKey, e.message) }

func errorf(status int, typeKey, format string, args ...any) *apiError {
	return &apiError{status: status, typeKey: typeKey, message: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, pipelines.TypeKeyBadRequest, format, args...)
}

func unauthorized(typeKey, format string, args ...any) *apiError {
	return errorf(http.StatusUnauthorized, typeKey, format, args...)
}

// errorBody is a WrappedException, plus the RFC 6749 fields on the token
// endpoint so OAuth clients understand it too.
type errorBody struct {
	pipelines.WrappedException
	OAuthError       string `json:"error,omitempty"`
	OAuthDescription string `json:"error_description,omitempty"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.status == http.StatusUnauthorized {
		// Clients refresh their token reactively on a 401 with a Bearer challenge.
		w.Header().Set("WWW-Authenticate", "Bearer")
	}
	body := errorBody{WrappedException: pipelines.WrappedException{
		Message: e.message, TypeKey: e.typeKey, TypeName: e.typeKey, EventID: eventID,
	}}
	if e.oauth != "" {
		body.OAuthError, body.OAuthDescription = e.oauth, e.message
	}
	writeJSON(w, e.status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"message":"encoding the answer failed","typeKey":"VssServiceException","errorCode":0,"eventId":3000}`)
	}
	writeEncodedJSON(w, status, b)
}

// writeEncodedJSON answers with JSON already encoded.
func writeEncodedJSON(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// storeError maps a store error to an answer: what (e.g. "agent 3") names the
// object, typeKey the not-found typeKey of that kind.
func storeError(err error, typeKey, what string) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, typeKey, "%s does not exist", what)
	case errors.Is(err, store.ErrTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, pipelines.TypeKeyBadRequest, "%s: %v", what, err)
	}
	return err
}
