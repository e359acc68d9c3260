package port_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

// rewriting serves the emulator through edit, which may change the answer
// to a bulk upsert, so tests can vary what Port says without faking it.
func rewriting(t *testing.T, edit func(status int, body []byte) (int, []byte)) (*porttest.Emulator, *port.Client) {
	t.Helper()
	emu := porttest.New(porttest.Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/entities/bulk") {
			emu.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		emu.ServeHTTP(rec, r)
		status, body := edit(rec.Code, rec.Body.Bytes())
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	c, err := port.New(port.Config{BaseURL: srv.URL, ClientID: emu.ClientID(), ClientSecret: emu.ClientSecret(),
		IntegrationIdentifier: "bulk-test", RetryBaseDelay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	bps := []port.Blueprint{
		{Identifier: "service", Title: "Service", Schema: port.BlueprintSchema{Properties: map[string]port.Property{"port": {Type: "number"}}},
			Relations: map[string]port.Relation{"system": {Target: "system"}}},
		{Identifier: "system", Title: "System", Schema: port.BlueprintSchema{Properties: map[string]port.Property{}}},
	}
	if err := c.CreateBlueprints(context.Background(), bps); err != nil {
		t.Fatal(err)
	}
	emu.ResetRequests()
	return emu, c
}

// maxExtra is the most extra requests isolating one bad entity among n may
// cost: two per halving.
func maxExtra(n int) int { return 2 * int(math.Ceil(math.Log2(float64(n)))) }

// checkIsolated asserts that exactly the entities at bad failed, each with
// Port's 422 and message and its own identifier, and the others landed.
func checkIsolated(t *testing.T, emu *porttest.Emulator, ents []port.Entity, res []port.BulkResult, bad ...int) {
	t.Helper()
	isBad := map[int]bool{}
	for _, b := range bad {
		isBad[b] = true
	}
	for i, r := range res {
		if !isBad[i] {
			if r.Err != nil {
				t.Errorf("entity %d failed with the bad one: %v", i, r.Err)
			}
			if _, ok := emu.Entity("service", ents[i].Identifier.(string)); !ok {
				t.Errorf("entity %d did not land", i)
			}
			continue
		}
		var pe *port.Error
		if !errors.As(r.Err, &pe) || pe.Status != 422 || pe.Code != port.CodeInvalidRequest || pe.Message == "" || pe.Entity != ents[i].Identifier {
			t.Errorf("bad entity %d: want a 422 invalid_request naming it with Port's message, got %#v", i, r.Err)
		}
		if _, ok := emu.Entity("service", ents[i].Identifier.(string)); ok {
			t.Errorf("bad entity %d landed", i)
		}
	}
}

// badTeam returns n entities of which those at bad carry a team Port's
// route schema refuses (an object that is not a query), which the client
// cannot see before sending.
func badTeam(n int, bad ...int) []port.Entity {
	ents := entities(n, 0)
	for _, b := range bad {
		ents[b].Team = map[string]any{"name": "platform"}
	}
	return ents
}

func TestBulk422IsolatesTheNamedEntity(t *testing.T) {
	t.Parallel()
	emu, c := rewriting(t, func(s int, b []byte) (int, []byte) { return s, b })
	ents := badTeam(20, 13)
	res, err := c.BulkUpsert(context.Background(), "service", ents, port.UpsertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkIsolated(t, emu, ents, res, 13)
	// Port's message names index 13: that entity alone, then the rest.
	if n := emu.Requests().ByRoute[bulkRoute]; n != 3 {
		t.Fatalf("%d bulk requests, want 3", n)
	}
}

// noIndex strips the entity index from 422 messages, as a Port that does
// not name the entity would answer.
var indexInMessage = regexp.MustCompile(`entities/\d+/`)

func noIndex(status int, body []byte) (int, []byte) {
	if status == 422 {
		body = indexInMessage.ReplaceAll(body, []byte("entities/?/"))
	}
	return status, body
}

func TestBulk422BisectsWithinLogN(t *testing.T) {
	t.Parallel()
	for _, bad := range []int{0, 7, 13, 19} {
		t.Run(fmt.Sprint(bad), func(t *testing.T) {
			t.Parallel()
			emu, c := rewriting(t, noIndex)
			ents := badTeam(20, bad)
			res, err := c.BulkUpsert(context.Background(), "service", ents, port.UpsertOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkIsolated(t, emu, ents, res, bad)
			n := emu.Requests().ByRoute[bulkRoute]
			if n-1 > maxExtra(20) {
				t.Fatalf("%d extra bulk requests to isolate one entity among 20, want at most %d", n-1, maxExtra(20))
			}
			t.Logf("bad entity at %d: %d extra bulk requests", bad, n-1)
		})
	}
}

func TestBulk422SeveralBadEntities(t *testing.T) {
	t.Parallel()
	for name, edit := range map[string]func(int, []byte) (int, []byte){
		"named":   func(s int, b []byte) (int, []byte) { return s, b },
		"unnamed": noIndex,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			emu, c := rewriting(t, edit)
			ents := badTeam(45, 2, 3, 30, 44)
			res, err := c.BulkUpsert(context.Background(), "service", ents, port.UpsertOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkIsolated(t, emu, ents, res, 2, 3, 30, 44)
		})
	}
}

func TestBulk422OnTheQueryStringIsNotSplit(t *testing.T) {
	t.Parallel()
	emu, c := rewriting(t, func(int, []byte) (int, []byte) {
		return 422, []byte(`{"ok":false,"error":"invalid_request","message":"querystring/upsert must be boolean"}`)
	})
	res, err := c.BulkUpsert(context.Background(), "service", entities(20, 0), port.UpsertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if port.StatusOf(r.Err) != 422 || !strings.Contains(r.Err.Error(), "querystring") {
			t.Fatalf("entity %d: %v", i, r.Err)
		}
	}
	if n := emu.Requests().ByRoute[bulkRoute]; n != 1 {
		t.Fatalf("%d bulk requests for a refusal that concerns every entity, want 1", n)
	}
}

func TestBulkInjected422IsRetriedInParts(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	emu.InjectFaults(porttest.FaultSpec{Status: 422, Count: 1, Route: bulkRoute})
	res, err := c.BulkUpsert(context.Background(), "service", entities(20, 0), port.UpsertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkAllOK(t, res, 20)
	if n := emu.Requests().ByRoute[bulkRoute]; n != 3 {
		t.Fatalf("%d bulk requests, want 3 (one refused, two halves)", n)
	}
}

func TestBulkAllFailedOKFalse(t *testing.T) {
	t.Parallel()
	emu, c := env(t)
	ents := entities(4, 0)
	for i := range ents {
		ents[i].Relations = map[string]any{"system": fmt.Sprintf("missing-%d", i)}
	}
	res, err := c.BulkUpsert(context.Background(), "service", ents, port.UpsertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !port.IsNotFound(r.Err) || !strings.Contains(r.Err.Error(), fmt.Sprintf("missing-%d", i)) {
			t.Fatalf("entity %d: want its own not_found, got %v", i, r.Err)
		}
	}
	if n := emu.Requests().ByRoute[bulkRoute]; n != 1 {
		t.Fatalf("%d bulk requests, want 1", n)
	}
}

func TestBulkItemOKFalseFailsAlone(t *testing.T) {
	t.Parallel()
	emu, c := rewriting(t, func(s int, b []byte) (int, []byte) {
		var out map[string]any
		if json.Unmarshal(b, &out) != nil {
			return s, b
		}
		ents, _ := out["entities"].([]any)
		for _, e := range ents {
			if m := e.(map[string]any); m["index"] == 2.0 {
				m["ok"] = false
				m["message"] = "refused by a rule"
			}
		}
		data, _ := json.Marshal(out)
		return s, data
	})
	res, err := c.BulkUpsert(context.Background(), "service", entities(5, 0), port.UpsertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if (i == 2) != (r.Err != nil) {
			t.Fatalf("entity %d: %v", i, r.Err)
		}
	}
	if !strings.Contains(res[2].Err.Error(), "refused by a rule") || !strings.Contains(res[2].Err.Error(), "svc-002") {
		t.Fatalf("error %v", res[2].Err)
	}
	if emu.Requests().ByRoute[bulkRoute] != 1 {
		t.Fatal("an ok: false result made the client send again")
	}
}
