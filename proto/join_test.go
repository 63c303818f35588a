package proto

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestJoinFlags(t *testing.T) {
	many := make([]string, 0, MaxJoinFlags+4)
	for i := range MaxJoinFlags + 4 {
		many = append(many, fmt.Sprintf("%q:true", fmt.Sprint("k", i)))
	}
	tests := []struct {
		name, payload string
		want          []string
	}{
		{"phoenix.js default", `{}`, nil},
		{"empty", ``, nil},
		{"not an object", `[true]`, nil},
		{"string true", `"true"`, nil},
		{"one", `{"sender":true}`, []string{"sender"}},
		{"order kept", `{"joins":true,"sender":true,"ignore":true}`, []string{"joins", "sender", "ignore"}},
		{"only true counts", `{"sender":"true","joins":1,"ignore":false,"x":{"y":true},"z":[true]}`, nil},
		{"nested true is not a flag", `{"history":{"last":true},"sender":true}`, []string{"sender"}},
		{"last value wins", `{"sender":true,"sender":false}`, nil},
		{"repeated true once", `{"sender":true,"sender":true}`, []string{"sender"}},
		{"white space", " \n{ \"sender\" : true }\n", []string{"sender"}},
		{"bad json keeps what came before", `{"sender":true,"joins":tru}`, []string{"sender"}},
		{"long key ignored", `{"` + strings.Repeat("k", MaxEventLength+1) + `":true}`, nil},
		{"capped", `{` + strings.Join(many, ",") + `}`, func() []string {
			var w []string
			for i := range MaxJoinFlags {
				w = append(w, fmt.Sprint("k", i))
			}
			return w
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := JoinFlags([]byte(tt.payload)); !slices.Equal(got, tt.want) {
				t.Fatalf("JoinFlags(%s) = %q, want %q", tt.payload, got, tt.want)
			}
		})
	}
}

// FuzzJoinFlags: any client payload gives at most MaxJoinFlags distinct
// keys of bounded length, and never panics.
func FuzzJoinFlags(f *testing.F) {
	for _, s := range []string{`{}`, `{"sender":true}`, `{"a":true,"a":false}`, `{"h":{"last":50},"presence":true}`, `[`, `{"a":tru`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		flags := JoinFlags(data)
		if len(flags) > MaxJoinFlags {
			t.Fatalf("%d flags", len(flags))
		}
		seen := map[string]bool{}
		for _, k := range flags {
			if len(k) > MaxEventLength || seen[k] {
				t.Fatalf("flag %q: too long or repeated in %q", k, flags)
			}
			seen[k] = true
		}
	})
}
