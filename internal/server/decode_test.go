package server

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentry-dev/agentry/internal/jobapi"
)

func TestDecodeJobSpec(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    jobapi.JobSpec
		wantErr string
	}{
		{
			name: "tasks made canonical, CmdLine@2 by default",
			body: "\xEF\xBB\xBF" + `{"POOL":"default","steps":[{"script":"a"},{"task":"bash@3","script":"b"},{"Task":"CMDLINE@2","script":"c"}]}`,
			want: jobapi.JobSpec{Pool: "default", Steps: []jobapi.Step{
				{Task: jobapi.TaskCmdLine, Script: "a"}, {Task: jobapi.TaskBash, Script: "b"}, {Task: jobapi.TaskCmdLine, Script: "c"}}},
		},
		{name: "empty body", body: "", wantErr: "empty"},
		{name: "trailing data", body: `{"pool":"p","steps":[{"script":"a"}]} {}`, wantErr: "after its JSON value"},
		{name: "truncated", body: `{"pool":"p"`, wantErr: "JSON"},
		{name: "blank script", body: `{"pool":"p","steps":[{"script":"  "}]}`, wantErr: "step 1: script is empty"},
		{name: "reserved variable", body: `{"pool":"p","steps":[{"script":"a"}],"variables":{"System.AccessToken":{"value":"x"}}}`, wantErr: "reserved"},
		{name: "negative timeout", body: `{"pool":"p","steps":[{"script":"a"}],"timeoutInMinutes":-1}`, wantErr: "negative"},
		{name: "control character in name", body: `{"pool":"p","name":"a\u0007","steps":[{"script":"a"}]}`, wantErr: "control character"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeJobSpec([]byte(tc.body))
			if tc.wantErr != "" {
				var ae *apiError
				if !errors.As(err, &ae) || ae.status != http.StatusBadRequest || !strings.Contains(ae.message, tc.wantErr) {
					t.Fatalf("error %v, want a 400 mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAuthorization(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		header, scheme, cred string
		ok                   bool
	}{
		{"Bearer abc", "Bearer", "abc", true},
		{"bearer   abc ", "Bearer", "abc", true},
		{"Basic " + b64(":tok"), "Basic", "tok", true},
		{"Basic " + b64("user:tok:with:colons"), "Basic", "tok:with:colons", true},
		{"Basic " + b64("tok"), "", "", false},
		{"Basic " + b64(":"), "", "", false},
		{"Basic !!!", "", "", false},
		{"Bearer ", "", "", false},
		{"Bearer", "", "", false},
		{"Digest abc", "", "", false},
		{"", "", "", false},
	}
	for _, tc := range tests {
		scheme, cred, ok := parseAuthorization(tc.header)
		if scheme != tc.scheme || cred != tc.cred || ok != tc.ok {
			t.Errorf("parseAuthorization(%q) = %q, %q, %t; want %q, %q, %t", tc.header, scheme, cred, ok, tc.scheme, tc.cred, tc.ok)
		}
	}
}
