package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// transcriptDir holds frames captured from a real Phoenix 1.7.21 server
// (see testdata/README.md).
var transcriptDir = "testdata"

type logEntry struct {
	T        int        `json:"t"`
	Ev       string     `json:"ev"`
	Dir      string     `json:"dir"` // "out" = client to server, "in" = server to client
	Type     string     `json:"type"`
	Data     string     `json:"data"`
	Hex      string     `json:"hex"`
	Code     int        `json:"code"`
	OtherLog []logEntry `json:"other_log"`
}

type scenario struct {
	Name string     `json:"name"`
	Vsn  string     `json:"vsn"`
	Log  []logEntry `json:"log"`
}

// frame is one captured WebSocket data frame.
type frame struct {
	where      string
	fromSrv    bool
	binary     bool
	data       []byte
	closed1011 bool // Phoenix closed the socket with 1011 right after this frame
}

func loadTranscript(t *testing.T, name string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(transcriptDir, name))
	if err != nil {
		t.Fatalf("Phoenix transcript missing: %v (the recordings belong in the repository, see %s/README.md)", err, transcriptDir)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// framesOf flattens one connection's log; nested other_log entries are a
// different connection, so their 1011 detection stays within their own log.
func framesOf(t *testing.T, where string, log []logEntry) []frame {
	t.Helper()
	var out []frame
	for i, e := range log {
		if e.OtherLog != nil {
			out = append(out, framesOf(t, where+"/other", e.OtherLog)...)
		}
		if e.Dir == "" {
			continue
		}
		f := frame{where: fmt.Sprintf("%s/%dms", where, e.T), fromSrv: e.Dir == "in", binary: e.Type == "binary", data: []byte(e.Data)}
		if f.binary {
			b, err := hex.DecodeString(e.Hex)
			if err != nil {
				t.Fatalf("%s: bad hex %q", where, e.Hex)
			}
			f.data = b
		}
		if i+1 < len(log) && log[i+1].Ev == "close" && log[i+1].Code == 1011 {
			f.closed1011 = true
		}
		out = append(out, f)
	}
	return out
}

func transcriptFrames(t *testing.T, file string) []frame {
	var scs []scenario
	loadTranscript(t, file, &scs)
	var out []frame
	for _, sc := range scs {
		out = append(out, framesOf(t, sc.Name, sc.Log)...)
	}
	return out
}

// encodeClientV2 rebuilds a client frame from a decoded Message the way
// phoenix.js serializes it, so comparing with the captured bytes checks every
// decoded field at once.
func encodeClientV2(m Message) []byte {
	if m.Binary {
		b := []byte{kindPush, byte(len(m.JoinRef)), byte(len(m.Ref)), byte(len(m.Topic)), byte(len(m.Event))}
		b = append(b, m.JoinRef+m.Ref+m.Topic+m.Event...)
		return append(b, m.Payload...)
	}
	b := []byte{'['}
	b = appendNullableString(b, m.JoinRef)
	b = append(b, ',')
	b = appendNullableString(b, m.Ref)
	b = append(b, ',')
	b = AppendJSONString(b, m.Topic)
	b = append(b, ',')
	b = AppendJSONString(b, m.Event)
	b = append(b, ',')
	b = append(b, m.Payload...)
	return append(b, ']')
}

// encodeClientV1 mirrors phoenix.js's V1 key order; join_ref is omitted when
// absent, as in the transcripts (no transcript frame sends "join_ref":null).
func encodeClientV1(m Message) []byte {
	b := []byte(`{"topic":`)
	b = AppendJSONString(b, m.Topic)
	b = append(b, `,"event":`...)
	b = AppendJSONString(b, m.Event)
	b = append(b, `,"payload":`...)
	b = append(b, m.Payload...)
	b = append(b, `,"ref":`...)
	b = appendNullableString(b, m.Ref)
	if m.JoinRef != "" {
		b = append(b, `,"join_ref":`...)
		b = AppendJSONString(b, m.JoinRef)
	}
	return append(b, '}')
}

func TestGoldenClientFrames(t *testing.T) {
	for _, tc := range []struct {
		file   string
		ser    Serializer
		encode func(Message) []byte
	}{
		{"ws_v2.json", V2, encodeClientV2},
		{"ws_v1.json", V1, encodeClientV1},
	} {
		t.Run(tc.file, func(t *testing.T) {
			malformedSeen := 0
			for _, f := range transcriptFrames(t, tc.file) {
				if f.fromSrv {
					continue
				}
				t.Run(f.where, func(t *testing.T) {
					m, err := tc.ser.Decode(f.data, f.binary)
					if f.closed1011 {
						malformedSeen++
						if !errors.Is(err, ErrMalformed) {
							t.Fatalf("Phoenix closed with 1011 after %q, Decode gave %+v, %v", f.data, m, err)
						}
						return
					}
					if err != nil {
						t.Fatalf("Decode(%q): %v", f.data, err)
					}
					if m.Binary != f.binary {
						t.Errorf("Binary = %v, want %v", m.Binary, f.binary)
					}
					if got := tc.encode(m); !bytes.Equal(got, f.data) {
						t.Errorf("decoded %+v\nre-encodes to %q\nwant         %q", m, got, f.data)
					}
				})
			}
			if malformedSeen == 0 {
				t.Error("no frame followed by a 1011 close: transcript changed?")
			}
		})
	}
}

type v2Reply struct {
	Response json.RawMessage `json:"response"`
	Status   string          `json:"status"`
}

// reencodeV2 takes a captured server frame apart with encoding/json and
// rebuilds it through the serializer.
func reencodeV2(t *testing.T, f frame) ([]byte, bool, error) {
	t.Helper()
	if f.binary {
		d := f.data
		if len(d) < 5 || d[0] != kindReply {
			t.Fatalf("unexpected server binary frame % x", d)
		}
		off := 5
		var fields [4]string
		for k := range fields {
			l := int(d[1+k])
			fields[k] = string(d[off : off+l])
			off += l
		}
		return V2.AppendReply(nil, fields[0], fields[1], fields[2], fields[3], d[off:], true)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(f.data, &parts); err != nil || len(parts) != 5 {
		t.Fatalf("server frame %q: %v", f.data, err)
	}
	var jr, ref *string
	var topic, event string
	for _, p := range []struct {
		raw json.RawMessage
		v   any
	}{{parts[0], &jr}, {parts[1], &ref}, {parts[2], &topic}, {parts[3], &event}} {
		if err := json.Unmarshal(p.raw, p.v); err != nil {
			t.Fatal(err)
		}
	}
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	switch event {
	case "phx_reply":
		var r v2Reply
		if err := json.Unmarshal(parts[4], &r); err != nil {
			t.Fatal(err)
		}
		return V2.AppendReply(nil, deref(jr), deref(ref), topic, r.Status, r.Response, false)
	case "phx_close", "phx_error":
		if deref(jr) != deref(ref) {
			t.Fatalf("%s with join_ref %q != ref %q", event, deref(jr), deref(ref))
		}
		if event == "phx_close" {
			return V2.AppendClose(nil, deref(jr), topic)
		}
		return V2.AppendError(nil, deref(jr), topic)
	}
	if ref != nil {
		t.Fatalf("server push with a ref: %q", f.data)
	}
	if jr == nil {
		return V2.AppendBroadcast(nil, topic, event, parts[4], false)
	}
	return V2.AppendPush(nil, *jr, topic, event, parts[4], false)
}

func reencodeV1(t *testing.T, f frame) ([]byte, bool, error) {
	t.Helper()
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(f.data, &keys); err != nil {
		t.Fatalf("server frame %q: %v", f.data, err)
	}
	if _, ok := keys["join_ref"]; ok {
		t.Fatalf("V1 server frame carries join_ref: %q", f.data)
	}
	var msg struct {
		Event   string          `json:"event"`
		Payload json.RawMessage `json:"payload"`
		Ref     *string         `json:"ref"`
		Topic   string          `json:"topic"`
	}
	if err := json.Unmarshal(f.data, &msg); err != nil {
		t.Fatal(err)
	}
	ref := ""
	if msg.Ref != nil {
		ref = *msg.Ref
	}
	switch msg.Event {
	case "phx_reply":
		var r v2Reply
		if err := json.Unmarshal(msg.Payload, &r); err != nil {
			t.Fatal(err)
		}
		// The join_ref argument must not leak into V1 output.
		return V1.AppendReply(nil, "99", ref, msg.Topic, r.Status, r.Response, false)
	case "phx_close":
		return V1.AppendClose(nil, ref, msg.Topic)
	case "phx_error":
		return V1.AppendError(nil, ref, msg.Topic)
	}
	if msg.Ref != nil {
		t.Fatalf("server push with a ref: %q", f.data)
	}
	// V1 cannot tell a push from a broadcast: both drop join_ref.
	push, _, err := V1.AppendPush(nil, "5", msg.Topic, msg.Event, msg.Payload, false)
	if err != nil {
		t.Fatal(err)
	}
	b, bin, err := V1.AppendBroadcast(nil, msg.Topic, msg.Event, msg.Payload, false)
	if !bytes.Equal(push, b) {
		t.Errorf("V1 push %q != broadcast %q", push, b)
	}
	return b, bin, err
}

func TestGoldenServerFrames(t *testing.T) {
	for _, tc := range []struct {
		file     string
		reencode func(*testing.T, frame) ([]byte, bool, error)
	}{
		{"ws_v2.json", reencodeV2},
		{"ws_v1.json", reencodeV1},
	} {
		t.Run(tc.file, func(t *testing.T) {
			n := 0
			for _, f := range transcriptFrames(t, tc.file) {
				if !f.fromSrv {
					continue
				}
				n++
				t.Run(f.where, func(t *testing.T) {
					got, bin, err := tc.reencode(t, f)
					if err != nil {
						t.Fatal(err)
					}
					if bin != f.binary {
						t.Errorf("binary = %v, want %v", bin, f.binary)
					}
					if !bytes.Equal(got, f.data) {
						t.Errorf("got  %q\nwant %q", got, f.data)
					}
				})
			}
			if n == 0 {
				t.Error("no server frames found")
			}
		})
	}
}

// TestGoldenIdleBroadcasts re-encodes the fastlane frames of the long-lived
// idle capture, whose entries carry no "type" (all text).
func TestGoldenIdleBroadcasts(t *testing.T) {
	var idle struct {
		First []logEntry `json:"first_entries"`
		Last  []logEntry `json:"last_entries"`
	}
	loadTranscript(t, "ws_v2_idle_joined_with_server_traffic.json", &idle)
	for _, f := range framesOf(t, "idle", append(idle.First, idle.Last...)) {
		if !f.fromSrv {
			continue
		}
		got, bin, err := reencodeV2(t, f)
		if err != nil || bin || !bytes.Equal(got, f.data) {
			t.Errorf("got %q, %v, %v; want %q", got, bin, err, f.data)
		}
	}
}
