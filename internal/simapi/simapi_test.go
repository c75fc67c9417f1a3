package simapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

func TestRunLifecycle(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := Run{CreatedAt: t0, Queued: 10 * time.Second, Running: 100 * time.Second, Outcome: runs.StatusFailed, EndProgress: 40}
	for _, tc := range []struct {
		at       time.Duration
		status   runs.Status
		progress float64
		finished bool
	}{
		{0, runs.StatusQueued, 0, false},
		{10 * time.Second, runs.StatusRunning, 0, false},
		{60 * time.Second, runs.StatusRunning, 20, false},
		{110 * time.Second, runs.StatusFailed, 40, true},
	} {
		st := r.At(t0.Add(tc.at))
		if st.Status != tc.status || st.Progress != tc.progress || st.FinishedAt.IsZero() == tc.finished {
			t.Errorf("at +%s: %+v, want %s %v finished=%v", tc.at, st, tc.status, tc.progress, tc.finished)
		}
	}
}

func TestServerAuthAndDocuments(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	list := SampleRuns(10, 7, now)
	s := New("tok", list, WithClock(func() time.Time { return now }))
	srv := httptest.NewServer(s)
	defer srv.Close()

	get := func(path, token string) (*http.Response, map[string]any) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		json.NewDecoder(resp.Body).Decode(&doc)
		return resp, doc
	}
	id := list[1].ID
	if resp, _ := get("/v1/runs/"+id, ""); resp.StatusCode != 401 {
		t.Errorf("no token: %d, want 401", resp.StatusCode)
	}
	if resp, _ := get("/v1/runs/"+id, "wrong"); resp.StatusCode != 401 {
		t.Errorf("wrong token: %d, want 401", resp.StatusCode)
	}
	if resp, _ := get("/v1/runs/00000000-0000-4000-8000-000000000000", "tok"); resp.StatusCode != 404 {
		t.Errorf("unknown run: %d, want 404", resp.StatusCode)
	}
	resp, doc := get("/v1/runs/"+id, "tok")
	if resp.StatusCode != 200 || doc["id"] != id || doc["status"] != "failed" || doc["finished_at"] == nil {
		t.Errorf("run 1 = %d %v, want 200 and an early failure", resp.StatusCode, doc)
	}
	if s.Requests(id) != 1 {
		t.Errorf("requests = %d, want 1 (unauthorised ones are not counted)", s.Requests(id))
	}
	types := map[string]bool{}
	statuses := map[runs.Status]bool{}
	for _, r := range list {
		types[r.WorkflowType] = true
		statuses[r.At(now).Status] = true
	}
	if len(types) != 3 || !statuses[runs.StatusQueued] || !statuses[runs.StatusFailed] {
		t.Errorf("sample lacks variety: types %v, statuses %v", types, statuses)
	}
}
