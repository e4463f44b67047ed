// Package server is agentry-server: a job service that speaks the
// agent-facing side of the Azure Pipelines protocol (pools, agent
// registration, the RFC 7523 token endpoint, encrypted sessions and
// long-polled messages, job-request locks, timeline/feed/log/event
// reporting) plus agentry's own job API (package jobapi) through which users
// queue inline script jobs and read their results and logs.
//
// Every route authenticates: pool administration and the job API take the
// admin token, the token endpoint a client assertion signed by the agent's
// registered key, the listener routes an agent's listener token, and the
// reporting routes the job token carried in the job message. State lives
// behind store.Store; docs/CONTRACTS.md lists the routes.
package server
