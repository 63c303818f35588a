package presence

import (
	"encoding/json"
	"testing"

	"github.com/phxnats/phxnats/proto"
)

func st(s string) proto.PresenceState {
	var out proto.PresenceState
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		panic(err)
	}
	return out
}

func TestDiff(t *testing.T) {
	for _, tt := range []struct {
		name, old, new, want string
	}{
		{"nothing", `{}`, `{}`, `{"joins":{},"leaves":{}}`},
		{"first join", `{}`, `{"a":{"metas":[{"phx_ref":"1"}]}}`,
			`{"joins":{"a":{"metas":[{"phx_ref":"1","online_at":""}]}},"leaves":{}}`},
		{"second socket of a user: only the new meta joins", `{"a":{"metas":[{"phx_ref":"1"}]}}`, `{"a":{"metas":[{"phx_ref":"1"},{"phx_ref":"2"}]}}`,
			`{"joins":{"a":{"metas":[{"phx_ref":"2","online_at":""}]}},"leaves":{}}`},
		{"one socket of two leaves", `{"a":{"metas":[{"phx_ref":"1"},{"phx_ref":"2"}]}}`, `{"a":{"metas":[{"phx_ref":"2"}]}}`,
			`{"joins":{},"leaves":{"a":{"metas":[{"phx_ref":"1","online_at":""}]}}}`},
		{"last socket leaves", `{"a":{"metas":[{"phx_ref":"1"}]},"b":{"metas":[{"phx_ref":"3"}]}}`, `{"b":{"metas":[{"phx_ref":"3"}]}}`,
			`{"joins":{},"leaves":{"a":{"metas":[{"phx_ref":"1","online_at":""}]}}}`},
		{"a flap within one interval: leave and join in one diff", `{"a":{"metas":[{"phx_ref":"1"}]}}`, `{"a":{"metas":[{"phx_ref":"2"}]}}`,
			`{"joins":{"a":{"metas":[{"phx_ref":"2","online_at":""}]}},"leaves":{"a":{"metas":[{"phx_ref":"1","online_at":""}]}}}`},
		{"an update: new ref with phx_ref_prev", `{"a":{"metas":[{"phx_ref":"1"}]}}`, `{"a":{"metas":[{"phx_ref":"2","phx_ref_prev":"1"}]}}`,
			`{"joins":{"a":{"metas":[{"phx_ref":"2","phx_ref_prev":"1","online_at":""}]}},"leaves":{"a":{"metas":[{"phx_ref":"1","online_at":""}]}}}`},
		{"order of metas does not matter", `{"a":{"metas":[{"phx_ref":"1"},{"phx_ref":"2"}]}}`, `{"a":{"metas":[{"phx_ref":"2"},{"phx_ref":"1"}]}}`,
			`{"joins":{},"leaves":{}}`},
		{"join and leave together", `{"a":{"metas":[{"phx_ref":"1"}]}}`, `{"b":{"metas":[{"phx_ref":"2"}]}}`,
			`{"joins":{"b":{"metas":[{"phx_ref":"2","online_at":""}]}},"leaves":{"a":{"metas":[{"phx_ref":"1","online_at":""}]}}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := Diff(st(tt.old), st(tt.new))
			got, _ := proto.Marshal(d)
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
			if Empty(d) != (tt.want == `{"joins":{},"leaves":{}}`) {
				t.Fatal("Empty disagrees")
			}
		})
	}
}

// Many metas of one user (above the linear-scan bound) diff by set.
func TestDiffManyMetas(t *testing.T) {
	old, new := proto.Presence{}, proto.Presence{}
	for i := range 40 {
		m := proto.Meta{PhxRef: string(rune('A' + i))}
		if i < 30 {
			old.Metas = append(old.Metas, m)
		}
		if i >= 10 {
			new.Metas = append(new.Metas, m)
		}
	}
	d := Diff(proto.PresenceState{"a": old}, proto.PresenceState{"a": new})
	if len(d.Joins["a"].Metas) != 10 || len(d.Leaves["a"].Metas) != 10 {
		t.Fatalf("joins %d leaves %d, want 10 and 10", len(d.Joins["a"].Metas), len(d.Leaves["a"].Metas))
	}
}

// A join within the interval gets the state the others were told plus its
// own meta.
func TestStateFor(t *testing.T) {
	me := &proto.Meta{PhxRef: "MINE", OnlineAt: "1"}
	for _, tt := range []struct {
		shown string
		meta  *proto.Meta
		want  map[string]int
	}{
		{`{}`, me, map[string]int{"a": 1}},
		{`{"b":{"metas":[{"phx_ref":"2"}]}}`, me, map[string]int{"a": 1, "b": 1}},
		{`{"a":{"metas":[{"phx_ref":"2"}]}}`, me, map[string]int{"a": 2}},
		{`{"a":{"metas":[{"phx_ref":"MINE"}]}}`, me, map[string]int{"a": 1}},
		{`{"b":{"metas":[{"phx_ref":"2"}]}}`, nil, map[string]int{"b": 1}}, // anonymous
	} {
		r := &room{shown: st(tt.shown)}
		got := r.stateFor(&channel{user: "a", meta: tt.meta})
		var state proto.PresenceState
		if err := json.Unmarshal(got, &state); err != nil {
			t.Fatalf("%s: %s is not JSON: %v", tt.shown, got, err)
		}
		counts := map[string]int{}
		for u, p := range state {
			counts[u] = len(p.Metas)
		}
		if len(counts) != len(tt.want) {
			t.Fatalf("%s: got %s", tt.shown, got)
		}
		for u, n := range tt.want {
			if counts[u] != n {
				t.Fatalf("%s: got %s", tt.shown, got)
			}
		}
	}
}
