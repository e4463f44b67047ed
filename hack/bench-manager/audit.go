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
// namespace, once its response is complete. Nothing else is
// logged, and the log is written before the response is returned (the log
// backend's blocking mode), so it is complete when a create has returned.
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
		Resource string `json:"resource"`
		Name     string `json:"name"`
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

// auditCreated reads the log auditFlags asked for and returns, per resource
// ("pods", "agents"), when each named object's create completed.
func auditCreated(path string) (map[string]map[string]time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("the API server's audit log: %w", err)
	}
	defer f.Close()
	created := map[string]map[string]time.Time{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("the API server's audit log %s: %w", path, err)
		}
		if ev.ObjectRef != nil && ev.ObjectRef.Name == "" && ev.ResponseObject != nil {
			ev.ObjectRef.Name = ev.ResponseObject.Metadata.Name
		}
		if ev.Stage != "ResponseComplete" || ev.Verb != "create" || ev.ObjectRef == nil || ev.ObjectRef.Name == "" ||
			ev.ResponseStatus == nil || ev.ResponseStatus.Code != 201 {
			continue
		}
		byName := created[ev.ObjectRef.Resource]
		if byName == nil {
			byName = map[string]time.Time{}
			created[ev.ObjectRef.Resource] = byName
		}
		byName[ev.ObjectRef.Name] = ev.StageTimestamp
	}
	return created, sc.Err()
}
