package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// The fuzzers compare the hand-written scanner with encoding/json. The
// scanner is deliberately stricter in two ways (see scan.go): invalid UTF-8
// and unpaired surrogate escapes, both of which Jason rejects. Everything
// else must agree exactly.

var textSeeds = []string{
	`["1","1","rooms:lobby","phx_join",{}]`,
	`[null,"4","phoenix","heartbeat",{}]`,
	`["1","2","rooms:lobby","ping",{"hello":"world","n":1}]`,
	`["1","1","rooms:lobby","phx_join","str"]`,
	`["1","1","rooms:lobby"]`,
	`{"topic":"rooms:lobby","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}`,
	`{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"4"}`,
	`{"topic":"t","event":"e","payload":{},"ref":"1","topic":"dup"}`,
	`{"topic":"rooms:lobby","event":"phx_join","payload":{}}`,
	`hello`,
	`42`,
	` [ "\u00e9\ud83d\ude00" , null, "t\"\\\/\b\f\n\r\t" , "e" , [1,-0.5e+10,true,false,null,{"a":[]}] , 1 ] `,
	`["1","1","t","e",{"k":"\ud800"}]`,
	`[null,null,"t","e",-12.5E-3,"x"]`,
	`["1","1","t","e",{}]]`,
}

// hasSurrogateEscape is a coarse filter for inputs where the stricter
// surrogate rule may legitimately reject what encoding/json accepts.
func hasSurrogateEscape(data []byte) bool {
	lower := bytes.ToLower(data)
	for _, p := range []string{`\ud8`, `\ud9`, `\uda`, `\udb`, `\udc`, `\udd`, `\ude`, `\udf`} {
		if bytes.Contains(lower, []byte(p)) {
			return true
		}
	}
	return false
}

// mayBeStricter reports inputs on which our error is allowed although
// encoding/json accepts the JSON.
func mayBeStricter(data []byte, err error) bool {
	if !utf8.Valid(data) {
		return true
	}
	return hasSurrogateEscape(data) && strings.Contains(err.Error(), "surrogate")
}

func jsonString(t *testing.T, raw json.RawMessage, allowNull bool) (string, bool) {
	t.Helper()
	if allowNull && string(raw) == "null" {
		return "", true
	}
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("encoding/json rejects its own raw string %q: %v", raw, err)
	}
	return s, true
}

// refDecodeV2Text is the reference V2 decoder built on encoding/json.
func refDecodeV2Text(t *testing.T, data []byte) (Message, bool) {
	var parts []json.RawMessage
	if err := json.Unmarshal(data, &parts); err != nil || len(parts) < 5 {
		return Message{}, false
	}
	var m Message
	var ok bool
	if m.JoinRef, ok = jsonString(t, parts[0], true); !ok {
		return m, false
	}
	if m.Ref, ok = jsonString(t, parts[1], true); !ok {
		return m, false
	}
	if m.Topic, ok = jsonString(t, parts[2], false); !ok {
		return m, false
	}
	if m.Event, ok = jsonString(t, parts[3], false); !ok {
		return m, false
	}
	m.Payload = parts[4]
	return m, true
}

// refDecodeV1 is the reference V1 decoder: encoding/json's token stream
// with first-occurrence-wins keys, which is what Jason's map building gives.
func refDecodeV1(t *testing.T, data []byte) (Message, bool) {
	if !json.Valid(data) {
		return Message{}, false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return Message{}, false
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			t.Fatalf("valid JSON %q: %v", data, err)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			t.Fatalf("valid JSON %q: %v", data, err)
		}
		if _, dup := fields[kt.(string)]; !dup {
			fields[kt.(string)] = raw
		}
	}
	var m Message
	for _, k := range []string{"topic", "event", "payload", "ref"} {
		if _, ok := fields[k]; !ok {
			return m, false
		}
	}
	var ok bool
	if m.Topic, ok = jsonString(t, fields["topic"], false); !ok {
		return m, false
	}
	if m.Event, ok = jsonString(t, fields["event"], false); !ok {
		return m, false
	}
	if m.Ref, ok = jsonString(t, fields["ref"], true); !ok {
		return m, false
	}
	if jr, present := fields["join_ref"]; present {
		if m.JoinRef, ok = jsonString(t, jr, true); !ok {
			return m, false
		}
	}
	m.Payload = fields["payload"]
	return m, true
}

func checkAgainstRef(t *testing.T, data []byte, got Message, err error, want Message, refOK bool) {
	t.Helper()
	if err != nil && !errors.Is(err, ErrMalformed) {
		t.Fatalf("error %v does not wrap ErrMalformed", err)
	}
	switch {
	case err == nil && !refOK:
		t.Fatalf("accepted %q as %+v, encoding/json reference rejects it", data, got)
	case err == nil && !sameMessage(got, want):
		t.Fatalf("%q: got %+v, reference %+v", data, got, want)
	case err == nil && !json.Valid(got.Payload):
		t.Fatalf("%q: payload %q is not valid JSON", data, got.Payload)
	case err != nil && refOK && !mayBeStricter(data, err):
		t.Fatalf("rejected %q (%v), reference accepts it as %+v", data, err, want)
	}
}

func FuzzDecodeV1(f *testing.F) {
	for _, s := range textSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := V1.Decode(data, false)
		want, ok := refDecodeV1(t, data)
		checkAgainstRef(t, data, got, err, want, ok)
	})
}

func FuzzDecodeV2Text(f *testing.F) {
	for _, s := range textSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := V2.Decode(data, false)
		want, ok := refDecodeV2Text(t, data)
		checkAgainstRef(t, data, got, err, want, ok)
	})
}

func FuzzDecodeV2Binary(f *testing.F) {
	f.Add(goldenClientPush)
	f.Add([]byte{0, 1, 1, 11, 4, '1', '2', 'r', 'o', 'o', 'm', 's', ':', 'l', 'o', 'b', 'b', 'y', 'p', 'i', 'n', 'g', 1, 2, 3, 0xfe, 0xff})
	f.Add([]byte{0xff, 1, 2})
	f.Add(goldenReply)
	f.Add([]byte{0, 0, 0, 0, 0})
	f.Add([]byte{0, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := V2.Decode(data, true)
		// Reference: read the four length-prefixed fields naively.
		var want Message
		ok := len(data) >= 5 && data[0] == 0
		if ok {
			off := 5
			var fields [4]string
			for k := range fields {
				l := int(data[1+k])
				if off+l > len(data) {
					ok = false
					break
				}
				fields[k] = string(data[off : off+l])
				off += l
			}
			if ok {
				want = Message{JoinRef: fields[0], Ref: fields[1], Topic: fields[2], Event: fields[3], Payload: data[off:], Binary: true}
			}
		}
		if ok != (err == nil) {
			t.Fatalf("% x: err %v, reference ok=%v", data, err, ok)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
		if ok && !sameMessage(got, want) {
			t.Fatalf("% x: got %+v, want %+v", data, got, want)
		}
		if ok {
			if re := encodeClientV2(got); !bytes.Equal(re, data) {
				t.Fatalf("re-encoded % x, want % x", re, data)
			}
		}
	})
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "rooms:lobby", `"\`, "\x00\x1f\x7f", "<>&", "é😀\u2028", "a\xffb", "\xed\xa0\x80", "\xf0\x9f\x98"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendJSONString([]byte("x"), s)
		if out[0] != 'x' {
			t.Fatal("prefix clobbered")
		}
		out = out[1:]
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("%q encodes to invalid JSON %q", s, out)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if want := replaceInvalidUTF8(s); got != want {
			t.Fatalf("%q round-trips to %q via %q, want %q", s, got, out, want)
		}
		// Our own decoder must accept it too.
		if end, _, err := scanString(out, 0); err != nil || end != len(out) {
			t.Fatalf("scanString(%q) = %d, %v", out, end, err)
		}
	})
}

// replaceInvalidUTF8 replaces each invalid UTF-8 byte of s by U+FFFD, which
// is what encoding/json does too (strings.ToValidUTF8 would merge runs).
func replaceInvalidUTF8(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r) // RuneError for an invalid byte
		i += size
	}
	return b.String()
}

// TestRefDecoderSanity keeps the fuzz references honest on known inputs.
func TestRefDecoderSanity(t *testing.T) {
	m, ok := refDecodeV1(t, []byte(`{"topic":"a","event":"e","payload":{ "x" : 1 },"ref":null,"topic":"b"}`))
	if !ok || m.Topic != "a" || string(m.Payload) != `{ "x" : 1 }` {
		t.Errorf("refDecodeV1: %+v %v", m, ok)
	}
	m, ok = refDecodeV2Text(t, []byte(`[null, "1" ,"t","e", {"y":2} ]`))
	if !ok || m.Ref != "1" || string(m.Payload) != `{"y":2}` {
		t.Errorf("refDecodeV2Text: %+v %v", m, ok)
	}
}
