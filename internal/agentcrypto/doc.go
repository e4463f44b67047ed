// Package agentcrypto holds the cryptography of the Azure Pipelines agent
// protocol: RSA-2048 agent keys in .NET's RSAParameters shape, RS256 JWT client
// assertions, RSA-OAEP wrapping of the session key, and AES-256-CBC message
// bodies. Every function that reads bytes from the network returns an error on
// bad input; none panics.
package agentcrypto
