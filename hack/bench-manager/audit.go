package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The benchmark times a pod's creation by the API server's audit log, not by
// when its own watch delivers the pod: on a saturated machine a watch event
// can arrive hundreds of milliseconds after the create was committed, and
// that delay is the benchmark's, not the operator's.

// auditFlags writes an audit policy into dir and returns the kube-apiserver
// flags that log, to the returned path, every create of a pod or an Agent in
// namespace, and every delete or patch of an Agent (one of which removes
// it), once its response is complete. Nothing else is logged, and the log is
// written before the response is returned (the log backend's blocking
// mode), so it is complete when a request has returned.
func auditFlags(dir, namespace string) (map[string]string, string, error) {
	policy := fmt.Sprintf(`apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted, Panic]
rules:
- level: Metadata
  verbs: [create]
  namespaces: [%[1]q]
  resources: [{group: "", resources: [pods]}]
# The operator names Agents by generateName, which only the response holds.
- level: RequestResponse
  verbs: [create]
  namespaces: [%[1]q]
  resources: [{group: agentry.dev, resources: [agents]}]
# An Agent goes with whichever of its deletion and its finalizer's removal
# comes last.
- level: Metadata
  verbs: [delete, patch]
  namespaces: [%[1]q]
  resources: [{group: agentry.dev, resources: [agents]}]
- level: None
`, namespace)
	policyPath := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policyPath, []byte(policy), 0o644); err != nil {
		return nil, "", err
	}
	logPath := filepath.Join(dir, "audit.log")
	return map[string]string{
		"audit-policy-file": policyPath,
		"audit-log-path":    logPath,
		"audit-log-format":  "json",
		"audit-log-mode":    "blocking",
	}, logPath, nil
}

// auditEvent is the part of an audit.k8s.io/v1 Event the benchmark reads.
type auditEvent struct {
	Stage     string `json:"stage"`
	Verb      string `json:"verb"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	ResponseObject *struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	} `json:"responseObject"`
	StageTimestamp time.Time `json:"stageTimestamp"`
}

// auditTimes is what the audit log says of the burst's objects.
type auditTimes struct {
	// created is, per resource ("pods", "agents"), when each named
	// object's create completed.
	created map[string]map[string]time.Time
	// agentRemoved is when each Agent was removed: the last successful
	// delete or patch of it (not of its status). finish deletes an Agent and
	// removes its finalizer at once; the later of the two removes it, and
	// nothing succeeds on it after that.
	agentRemoved map[string]time.Time
}

// readAudit reads the log auditFlags asked for.
func readAudit(path string) (auditTimes, error) {
	t := auditTimes{created: map[string]map[string]time.Time{}, agentRemoved: map[string]time.Time{}}
	f, err := os.Open(path)
	if err != nil {
		return t, fmt.Errorf("the API server's audit log: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return t, fmt.Errorf("the API server's audit log %s: %w", path, err)
		}
		if ev.ObjectRef != nil && ev.ObjectRef.Name == "" && ev.ResponseObject != nil {
			ev.ObjectRef.Name = ev.ResponseObject.Metadata.Name
		}
		if ev.Stage != "ResponseComplete" || ev.ObjectRef == nil || ev.ObjectRef.Name == "" || ev.ResponseStatus == nil {
			continue
		}
		switch code := ev.ResponseStatus.Code; {
		case ev.Verb == "create" && code == 201:
			byName := t.created[ev.ObjectRef.Resource]
			if byName == nil {
				byName = map[string]time.Time{}
				t.created[ev.ObjectRef.Resource] = byName
			}
			byName[ev.ObjectRef.Name] = ev.StageTimestamp
		case (ev.Verb == "delete" || ev.Verb == "patch") && ev.ObjectRef.Resource == "agents" && ev.ObjectRef.Subresource == "" &&
			code >= 200 && code < 300:
			if ev.StageTimestamp.After(t.agentRemoved[ev.ObjectRef.Name]) {
				t.agentRemoved[ev.ObjectRef.Name] = ev.StageTimestamp
			}
		}
	}
	return t, sc.Err()
}
