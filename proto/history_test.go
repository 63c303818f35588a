package proto

import (
	"errors"
	"testing"
)

func TestHistoryOf(t *testing.T) {
	tests := []struct {
		name, payload string
		want          *HistoryRequest
		err           bool
	}{
		{"no history", `{}`, nil, false},
		{"not an object", `[1]`, nil, false},
		{"other keys", `{"sender":true}`, nil, false},
		{"null", `{"history":null}`, nil, false},
		{"the word elsewhere", `{"x":"history"}`, nil, false},
		{"last", `{"history":{"last":50}}`, &HistoryRequest{Last: 50}, false},
		{"huge last is capped later", `{"history":{"last":99999999999}}`, &HistoryRequest{Last: 1 << 30}, false},
		{"since string", `{"history":{"since":"812"}}`, &HistoryRequest{Since: 812, HasSince: true}, false},
		{"since number", `{"history":{"since":812}}`, &HistoryRequest{Since: 812, HasSince: true}, false},
		{"since zero", `{"history":{"since":"0"}}`, &HistoryRequest{HasSince: true}, false},
		{"with other keys", `{"sender":true,"history":{"last":1},"joins":true}`, &HistoryRequest{Last: 1}, false},
		{"last zero", `{"history":{"last":0}}`, nil, true},
		{"last negative", `{"history":{"last":-1}}`, nil, true},
		{"last fraction", `{"history":{"last":1.5}}`, nil, true},
		{"last string", `{"history":{"last":"5"}}`, nil, true},
		{"both", `{"history":{"last":1,"since":"2"}}`, nil, true},
		{"neither", `{"history":{}}`, nil, true},
		{"not an object value", `{"history":7}`, nil, true},
		{"since not digits", `{"history":{"since":"x1"}}`, nil, true},
		{"since negative", `{"history":{"since":-1}}`, nil, true},
		{"since too long", `{"history":{"since":"123456789012345678901"}}`, nil, true},
		{"since overflow", `{"history":{"since":"99999999999999999999"}}`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := HistoryOf([]byte(tt.payload))
			if tt.err {
				if !errors.Is(err, ErrBadHistory) && err == nil {
					t.Fatalf("HistoryOf(%s) = %+v, want an error", tt.payload, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("HistoryOf(%s): %v", tt.payload, err)
			}
			if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
				t.Fatalf("HistoryOf(%s) = %+v, want %+v", tt.payload, got, tt.want)
			}
		})
	}
}

// FuzzHistoryOf: any client payload either asks for nothing, for a
// positive number of messages, or for a position; never panics.
func FuzzHistoryOf(f *testing.F) {
	for _, s := range []string{`{}`, `{"history":{"last":5}}`, `{"history":{"since":"9"}}`, `{"history":{"since":1e3}}`, `{"history":`, `{"history":{"last":5,"last":0}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := HistoryOf(data)
		if err != nil || h == nil {
			return
		}
		if h.HasSince == (h.Last > 0) {
			t.Fatalf("%q: %+v asks for both or neither", data, h)
		}
		if h.Last < 0 {
			t.Fatalf("%q: last %d", data, h.Last)
		}
	})
}

func TestPositionRoundTrip(t *testing.T) {
	for _, seq := range []uint64{0, 1, 812, 1<<53 + 1, ^uint64(0)} {
		got, err := ParsePosition([]byte(`"` + FormatPosition(seq) + `"`))
		if err != nil || got != seq {
			t.Fatalf("position %d: %d %v", seq, got, err)
		}
	}
}
