package server_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/microsoft/azure-devops-go-api/azuredevops/v7"
	"github.com/microsoft/azure-devops-go-api/azuredevops/v7/taskagent"

	"github.com/agentry-dev/agentry/internal/agentcrypto"
	"github.com/agentry-dev/agentry/internal/server/servertest"
)

// TestMicrosoftGoClient drives agentry-server with Microsoft's own Go client
// (package taskagent), which discovers the routes with OPTIONS /_apis and
// GET /_apis/ResourceAreas and authenticates with a PAT.
func TestMicrosoftGoClient(t *testing.T) {
	ctx := context.Background()
	inst := servertest.Start(t)
	conn := azuredevops.NewPatConnection(inst.URL, inst.AdminToken)
	c, err := taskagent.NewClient(ctx, conn)
	if err != nil {
		t.Fatalf("taskagent.NewClient: %v", err)
	}

	name := "ms-pool"
	pools, err := c.GetAgentPools(ctx, taskagent.GetAgentPoolsArgs{PoolName: &name})
	if err != nil || len(*pools) != 0 {
		t.Fatalf("GetAgentPools(%s) = %v, %v; want none", name, pools, err)
	}
	pool, err := c.AddAgentPool(ctx, taskagent.AddAgentPoolArgs{Pool: &taskagent.TaskAgentPool{Name: &name}})
	if err != nil || pool.Id == nil || *pool.Name != name {
		t.Fatalf("AddAgentPool = %+v, %v", pool, err)
	}
	pools, err = c.GetAgentPools(ctx, taskagent.GetAgentPoolsArgs{PoolName: &name})
	if err != nil || len(*pools) != 1 || *(*pools)[0].Id != *pool.Id {
		t.Fatalf("GetAgentPools(%s) = %v, %v; want the new pool", name, pools, err)
	}

	key, err := agentcrypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := agentcrypto.PublicKeyOf(&key.PublicKey)
	agentName, version, one := "ms-agent", "4.255.0", 1
	caps := map[string]string{"Agent.OS": "Linux"}
	added, err := c.AddAgent(ctx, taskagent.AddAgentArgs{PoolId: pool.Id, Agent: &taskagent.TaskAgent{
		Name: &agentName, Version: &version, MaxParallelism: &one, SystemCapabilities: &caps,
		Authorization: &taskagent.TaskAgentAuthorization{PublicKey: &taskagent.TaskAgentPublicKey{
			Exponent: &pub.Exponent, Modulus: &pub.Modulus,
		}},
	}})
	if err != nil {
		t.Fatalf("AddAgent: %v", err)
	}
	if added.Id == nil || added.Authorization == nil || added.Authorization.ClientId == nil ||
		added.Authorization.AuthorizationUrl == nil || *added.Authorization.AuthorizationUrl != inst.URL+"/_apis/oauth2/token" {
		t.Fatalf("AddAgent answered %+v; want an id, a client id and the token URL", added)
	}

	found, err := c.GetAgents(ctx, taskagent.GetAgentsArgs{PoolId: pool.Id, AgentName: &agentName})
	if err != nil || len(*found) != 1 || *(*found)[0].Id != *added.Id {
		t.Fatalf("GetAgents(%s) = %v, %v", agentName, found, err)
	}
	got, err := c.GetAgent(ctx, taskagent.GetAgentArgs{PoolId: pool.Id, AgentId: added.Id})
	if err != nil || *got.Name != agentName || got.Status == nil || *got.Status != taskagent.TaskAgentStatusValues.Offline ||
		got.CreatedOn == nil || (*got.SystemCapabilities)["Agent.OS"] != "Linux" {
		t.Fatalf("GetAgent = %+v, %v", got, err)
	}

	// PUT: a new key and version.
	key2, err := agentcrypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub2 := agentcrypto.PublicKeyOf(&key2.PublicKey)
	version2 := "4.256.0"
	replaced, err := c.ReplaceAgent(ctx, taskagent.ReplaceAgentArgs{PoolId: pool.Id, AgentId: added.Id, Agent: &taskagent.TaskAgent{
		Id: added.Id, Name: &agentName, Version: &version2,
		Authorization: &taskagent.TaskAgentAuthorization{PublicKey: &taskagent.TaskAgentPublicKey{
			Exponent: &pub2.Exponent, Modulus: &pub2.Modulus,
		}},
	}})
	if err != nil || *replaced.Version != version2 || string(*replaced.Authorization.PublicKey.Modulus) != string(pub2.Modulus) ||
		replaced.Authorization.ClientId.String() != added.Authorization.ClientId.String() {
		t.Fatalf("ReplaceAgent = %+v, %v; want the new key and version, the same client id", replaced, err)
	}
	// PATCH: disable it, add a user capability.
	disabled := false
	userCaps := map[string]string{"gpu": "1"}
	updated, err := c.UpdateAgent(ctx, taskagent.UpdateAgentArgs{PoolId: pool.Id, AgentId: added.Id, Agent: &taskagent.TaskAgent{
		Id: added.Id, Enabled: &disabled, UserCapabilities: &userCaps,
	}})
	if err != nil || *updated.Enabled || *updated.Name != agentName || (*updated.UserCapabilities)["gpu"] != "1" {
		t.Fatalf("UpdateAgent = %+v, %v; want it disabled, name kept, gpu added", updated, err)
	}

	if err := c.DeleteAgent(ctx, taskagent.DeleteAgentArgs{PoolId: pool.Id, AgentId: added.Id}); err != nil {
		t.Fatalf("DeleteAgent: %v", err)
	}
	_, err = c.GetAgent(ctx, taskagent.GetAgentArgs{PoolId: pool.Id, AgentId: added.Id})
	var we azuredevops.WrappedError
	if !asErr(err, &we) || we.StatusCode == nil || *we.StatusCode != http.StatusNotFound || we.TypeKey == nil || *we.TypeKey != "TaskAgentNotFoundException" {
		t.Errorf("GetAgent after delete: %v; want 404 TaskAgentNotFoundException", err)
	}
	found, err = c.GetAgents(ctx, taskagent.GetAgentsArgs{PoolId: pool.Id, AgentName: &agentName})
	if err != nil || len(*found) != 0 {
		t.Errorf("GetAgents after delete = %v, %v; want none", found, err)
	}

	// A wrong token is refused, in a way the client reports.
	bad, err := taskagent.NewClient(ctx, azuredevops.NewPatConnection(inst.URL, "wrong"))
	if err == nil {
		_, err = bad.GetAgentPools(ctx, taskagent.GetAgentPoolsArgs{})
	}
	if !asErr(err, &we) || *we.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong PAT: %v; want 401", err)
	}
}
