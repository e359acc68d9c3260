package mapping

import (
	"context"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

func TestEnsureBlueprints(t *testing.T) {
	t.Parallel()
	emu := porttest.New(porttest.Options{})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	c, err := port.New(port.Config{BaseURL: srv.URL, ClientID: emu.ClientID(), ClientSecret: emu.ClientSecret(), RetryBaseDelay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A user already has their own "group" blueprint; it must survive.
	custom := port.Blueprint{Identifier: "group", Title: "Team (ours)", Schema: port.BlueprintSchema{Properties: map[string]port.Property{"slack": {Type: "string"}}}}
	if err := emu.PutBlueprint(custom); err != nil {
		t.Fatal(err)
	}
	defaults := DefaultBlueprints()
	created, err := EnsureBlueprints(ctx, c, defaults)
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != len(defaults)-1 || slices.Contains(created, "group") {
		t.Errorf("created %v, want every default except group", created)
	}
	if got, _ := emu.Blueprint("group"); got.Title != "Team (ours)" {
		t.Errorf("the user's group blueprint was changed: %+v", got)
	}
	comp, ok := emu.Blueprint("component")
	if !ok || !comp.Relations["providesApis"].Many || comp.Relations["providesApis"].Target != "api" {
		t.Errorf("component blueprint created without its relations: %+v", comp.Relations)
	}
	again, err := EnsureBlueprints(ctx, c, defaults)
	if err != nil || len(again) != 0 {
		t.Errorf("second run created %v (err %v), want nothing", again, err)
	}
	emu.InjectFaults(porttest.FaultSpec{Status: 500, Count: 100})
	if _, err := EnsureBlueprints(ctx, c, defaults); err == nil {
		t.Error("a failing Port gave no error")
	}
}
