// Package agent is agentry-agent's runtime: it reads an agent's three files,
// trades its key for a listener token, opens a session, waits for exactly one
// job, runs the job's script steps while streaming their output, reports the
// result with the job token, and leaves.
//
// Run is the whole life of one agent process. The pure pieces it is built
// from (environment naming, macro expansion, masking, feed batching, step
// conditions, message decoding) are plain functions with their own tests.
package agent
