// Package controllers holds agentry-manager's reconcilers: AgentPool keeps a
// pool's agents in step with its server's job queue, Agent registers one
// ephemeral agent, runs its pod and deregisters it when the pod ends.
//
// The pool-admin token is read here, used for the server calls and dropped;
// it is never written to a pod, an env var, a Secret a pod mounts, an event,
// a status or a log line.
package controllers
