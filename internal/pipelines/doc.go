// Package pipelines holds the wire types of the Azure Pipelines agent
// protocol, the three agent files Microsoft's agent keeps in its root folder,
// and a REST client for the routes the operator and the agent call. It is
// shared by agentry-manager, agentry-agent and agentry-server, so a type here
// is the single definition of its JSON shape.
package pipelines
