package server

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/google/uuid"

	"github.com/agentry-dev/agentry/internal/pipelines"
)

// Route discovery, as Microsoft's clients do it: the Go client asks
// OPTIONS /_apis for the resource locations and GET /_apis/ResourceAreas for
// where each area lives (an empty list: at the base URL, as on-premises
// servers answer); the .NET client asks GET /_apis/connectionData.

// Area ids.
const (
	areaDistributedTask = "a85b8835-c1a1-4aac-ae97-1c3d0ba72dbd"
	areaLocation        = "Location"
)

// Versions every location advertises. The server reads every api-version
// the same way, so the range is wide; releasedVersion 0.0 marks the routes
// as preview, as Azure does for distributedtask.
const (
	locationMinVersion      = "1.0"
	locationMaxVersion      = "7.1"
	locationReleasedVersion = "0.0"
)

// apiResourceLocation is one entry of OPTIONS /_apis.
type apiResourceLocation struct {
	ID              string `json:"id"`
	Area            string `json:"area"`
	ResourceName    string `json:"resourceName"`
	RouteTemplate   string `json:"routeTemplate"`
	ResourceVersion int    `json:"resourceVersion"`
	MinVersion      string `json:"minVersion"`
	MaxVersion      string `json:"maxVersion"`
	ReleasedVersion string `json:"releasedVersion"`
}

// agentryLocation makes the id of one of agentry's own resources: a name
// based (v5) UUID, the same on every server.
func agentryLocation(resource string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://agentry.dev/_apis/agentry/"+resource)).String()
}

// locations are the resources agentry-server serves. Azure's ids and route
// templates for the protocol's resources; agentry's own under area agentry.
var locations = func() []apiResourceLocation {
	planRoute := "{scopeIdentifier}/_apis/{area}/hubs/{hubName}/plans/{planId}/"
	l := []apiResourceLocation{
		{ID: "a8c47e17-4d56-4a56-92bb-de7ea7dc65be", Area: "distributedtask", ResourceName: "pools", RouteTemplate: "_apis/{area}/{resource}/{poolId}"},
		{ID: "e298ef32-5878-4cab-993c-043836571f42", Area: "distributedtask", ResourceName: "agents", RouteTemplate: "_apis/{area}/pools/{poolId}/{resource}/{agentId}"},
		{ID: "134e239e-2df3-4794-a6f6-24f1f19ec8dc", Area: "distributedtask", ResourceName: "sessions", RouteTemplate: "_apis/{area}/pools/{poolId}/{resource}/{sessionId}"},
		{ID: "c3a054f6-7a8a-49c0-944e-3a8e5d7adfd7", Area: "distributedtask", ResourceName: "messages", RouteTemplate: "_apis/{area}/pools/{poolId}/{resource}/{messageId}"},
		{ID: "fc825784-c92a-4299-9221-998a02d1b54f", Area: "distributedtask", ResourceName: "jobrequests", RouteTemplate: "_apis/{area}/pools/{poolId}/{resource}/{requestId}"},
		{ID: "8893bc5b-35b2-4be7-83cb-99e683551db4", Area: "distributedtask", ResourceName: "records", RouteTemplate: planRoute + "timelines/{timelineId}/{resource}/{recordId}"},
		{ID: "858983e4-19bd-4c5e-864c-507b59b58b12", Area: "distributedtask", ResourceName: "feed", RouteTemplate: planRoute + "timelines/{timelineId}/records/{recordId}/{resource}"},
		{ID: "46f5667d-263a-4684-91b1-dff7fdcf64e2", Area: "distributedtask", ResourceName: "logs", RouteTemplate: planRoute + "{resource}/{logId}"},
		{ID: "557624af-b29e-4c20-8ab0-0399d2204f3f", Area: "distributedtask", ResourceName: "events", RouteTemplate: planRoute + "{resource}"},
		{ID: "e81700f7-3be2-46de-8624-2eb35882fcaa", Area: areaLocation, ResourceName: "ResourceAreas", RouteTemplate: "_apis/{resource}/{areaId}"},
		{ID: "00d9565f-ed9c-4a06-9a50-00e7896ccab4", Area: areaLocation, ResourceName: "ConnectionData", RouteTemplate: "_apis/{resource}"},
		{ID: agentryLocation("token"), Area: "oauth2", ResourceName: "token", RouteTemplate: "_apis/{area}/{resource}"},
		{ID: agentryLocation("jobs"), Area: "agentry", ResourceName: "jobs", RouteTemplate: "_apis/{area}/{resource}/{id}"},
		{ID: agentryLocation("log"), Area: "agentry", ResourceName: "log", RouteTemplate: "_apis/{area}/jobs/{id}/{resource}"},
		{ID: agentryLocation("cancel"), Area: "agentry", ResourceName: "cancel", RouteTemplate: "_apis/{area}/jobs/{id}/{resource}"},
		{ID: agentryLocation("queue"), Area: "agentry", ResourceName: "queue", RouteTemplate: "_apis/{area}/pools/{poolId}/{resource}"},
	}
	for i := range l {
		l[i].ResourceVersion = 1
		l[i].MinVersion, l[i].MaxVersion, l[i].ReleasedVersion = locationMinVersion, locationMaxVersion, locationReleasedVersion
	}
	return l
}()

// listLocations is OPTIONS /_apis.
func (s *Server) listLocations(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Allow", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
	writeJSON(w, http.StatusOK, pipelines.NewList(locations))
	return nil
}

// resourceArea is an entry of GET /_apis/ResourceAreas.
type resourceArea struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	LocationURL string `json:"locationUrl"`
}

// listResourceAreas answers an empty list: every area is at the base URL.
func (s *Server) listResourceAreas(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, pipelines.NewList([]resourceArea{}))
	return nil
}

// getResourceArea answers where one area lives: the base URL.
func (s *Server) getResourceArea(w http.ResponseWriter, r *http.Request) error {
	if !strings.EqualFold(r.PathValue("areaId"), areaDistributedTask) && !strings.EqualFold(r.PathValue("areaId"), "distributedtask") {
		return errorf(http.StatusNotFound, typeKeyNotFound, "resource area %s is not served here", truncate(r.PathValue("areaId"), 64))
	}
	writeJSON(w, http.StatusOK, resourceArea{ID: areaDistributedTask, Name: "distributedtask", LocationURL: s.publicURL(r) + "/"})
	return nil
}

// Location service facts of connectionData.
const (
	// tfsServiceOwner is the service owner id Azure DevOps Server uses.
	tfsServiceOwner        = "00025394-6065-48ca-87d9-7f5672854ef7"
	publicAccessMapping    = "PublicAccessMapping"
	relativeToContext      = 0 // RelativeToSetting.Context
	serviceStatusActive    = 1 // ServiceStatus.Active
	connectionDataIdentity = "agentry"
)

type identity struct {
	ID                  string            `json:"id"`
	Descriptor          string            `json:"descriptor"`
	SubjectDescriptor   string            `json:"subjectDescriptor,omitempty"`
	ProviderDisplayName string            `json:"providerDisplayName"`
	IsActive            bool              `json:"isActive"`
	Properties          map[string]string `json:"properties"`
}

type accessMapping struct {
	DisplayName      string `json:"displayName"`
	Moniker          string `json:"moniker"`
	AccessPoint      string `json:"accessPoint"`
	ServiceOwner     string `json:"serviceOwner"`
	VirtualDirectory string `json:"virtualDirectory"`
}

type serviceDefinition struct {
	ServiceType       string `json:"serviceType"`
	Identifier        string `json:"identifier"`
	DisplayName       string `json:"displayName"`
	RelativeToSetting int    `json:"relativeToSetting"`
	RelativePath      string `json:"relativePath"`
	Description       string `json:"description"`
	ServiceOwner      string `json:"serviceOwner"`
	ToolID            string `json:"toolId"`
	ParentServiceType string `json:"parentServiceType,omitempty"`
	ParentIdentifier  string `json:"parentIdentifier"`
	Status            int    `json:"status"`
	ResourceVersion   int    `json:"resourceVersion"`
	MinVersion        string `json:"minVersion"`
	MaxVersion        string `json:"maxVersion"`
	ReleasedVersion   string `json:"releasedVersion"`
	LocationMappings  []any  `json:"locationMappings"`
}

type locationServiceData struct {
	ServiceOwner                string              `json:"serviceOwner"`
	DefaultAccessMappingMoniker string              `json:"defaultAccessMappingMoniker"`
	ClientAccessMappingMoniker  string              `json:"clientAccessMappingMoniker"`
	LastChangeID                int                 `json:"lastChangeId"`
	LastChangeID64              int64               `json:"lastChangeId64"`
	AccessMappings              []accessMapping     `json:"accessMappings"`
	ServiceDefinitions          []serviceDefinition `json:"serviceDefinitions"`
}

type connectionData struct {
	AuthenticatedUser               identity            `json:"authenticatedUser"`
	AuthorizedUser                  identity            `json:"authorizedUser"`
	InstanceID                      string              `json:"instanceId"`
	DeploymentID                    string              `json:"deploymentId"`
	DeploymentType                  string              `json:"deploymentType"`
	LocationServiceData             locationServiceData `json:"locationServiceData"`
	WebApplicationRelativeDirectory string              `json:"webApplicationRelativeDirectory"`
}

// connectionData is GET /_apis/connectionData: who the caller is (the
// admin, or anonymous) and the service definitions, one per location.
func (s *Server) connectionData(w http.ResponseWriter, r *http.Request) error {
	base := s.publicURL(r)
	user := identity{ID: uuid.Nil.String(), Descriptor: "System:PublicAccess;Anonymous", ProviderDisplayName: "Anonymous", Properties: map[string]string{}}
	if s.checkAdmin(r) {
		user = identity{ID: uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://agentry.dev/identity/admin")).String(),
			Descriptor: "agentry;admin", ProviderDisplayName: "agentry admin", IsActive: true, Properties: map[string]string{}}
	}
	defs := make([]serviceDefinition, 0, len(locations))
	for _, l := range locations {
		defs = append(defs, serviceDefinition{
			ServiceType: l.Area, Identifier: l.ID, DisplayName: l.ResourceName, RelativeToSetting: relativeToContext,
			RelativePath: l.RouteTemplate, Description: "Resource Location", ServiceOwner: tfsServiceOwner,
			ToolID: "Framework", ParentIdentifier: uuid.Nil.String(), Status: serviceStatusActive,
			ResourceVersion: l.ResourceVersion, MinVersion: l.MinVersion, MaxVersion: l.MaxVersion,
			ReleasedVersion: l.ReleasedVersion, LocationMappings: []any{},
		})
	}
	instance := uuid.NewSHA1(uuid.NameSpaceURL, []byte(base)).String()
	writeJSON(w, http.StatusOK, connectionData{
		AuthenticatedUser: user, AuthorizedUser: user, InstanceID: instance, DeploymentID: instance,
		DeploymentType: "onPremises", WebApplicationRelativeDirectory: "/",
		LocationServiceData: locationServiceData{
			ServiceOwner: tfsServiceOwner, DefaultAccessMappingMoniker: publicAccessMapping,
			ClientAccessMappingMoniker: publicAccessMapping, LastChangeID: 1, LastChangeID64: 1,
			AccessMappings: []accessMapping{{DisplayName: "Public Access Mapping", Moniker: publicAccessMapping,
				AccessPoint: base, ServiceOwner: tfsServiceOwner}},
			ServiceDefinitions: defs,
		},
	})
	return nil
}

// apiVersionPattern is what an api-version looks like: 7.1, 7.1-preview,
// 7.1-preview.1.
var apiVersionPattern = regexp.MustCompile(`^[0-9]{1,3}\.[0-9]{1,3}(-preview(\.[0-9]{1,4})?)?$`)

// apiVersion finds the request's api-version: in the query, or as a
// parameter of Accept or Content-Type. ok is false when one is given but
// malformed; an absent one is "" (the server's latest).
func apiVersion(r *http.Request) (version string, ok bool) {
	if v := r.URL.Query().Get("api-version"); v != "" {
		return v, apiVersionPattern.MatchString(v)
	}
	for _, h := range []string{r.Header.Get("Accept"), r.Header.Get("Content-Type")} {
		for _, param := range strings.FieldsFunc(h, func(c rune) bool { return c == ';' || c == ',' }) {
			k, v, found := strings.Cut(strings.TrimSpace(param), "=")
			if found && strings.EqualFold(strings.TrimSpace(k), "api-version") {
				v = strings.Trim(strings.TrimSpace(v), `"`)
				return v, apiVersionPattern.MatchString(v)
			}
		}
	}
	return "", true
}
