package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// Golden binary frames from Phoenix's v2_json_serializer_test.exs.
var (
	goldenClientPush = []byte("\x00\x02\x03\x05\x05" + "12" + "123" + "topic" + "event" + "efg")
	goldenServerPush = []byte("\x00\x02\x05\x05" + "12" + "topic" + "event" + "efg")
	goldenReply      = []byte("\x01\x02\x03\x05\x02" + "12" + "123" + "topic" + "ok" + "efg")
	goldenBroadcast  = []byte("\x02\x05\x05" + "topic" + "event" + "efg")
)

func TestBinaryGolden(t *testing.T) {
	t.Run("decode client push", func(t *testing.T) {
		m, err := V2.Decode(goldenClientPush, true)
		want := Message{JoinRef: "12", Ref: "123", Topic: "topic", Event: "event", Payload: []byte("efg"), Binary: true}
		if err != nil || !sameMessage(m, want) {
			t.Fatalf("got %+v, %v; want %+v", m, err, want)
		}
	})
	efg := []byte("efg")
	for _, tc := range []struct {
		name string
		enc  func() ([]byte, bool, error)
		want []byte
	}{
		{"reply", func() ([]byte, bool, error) { return V2.AppendReply(nil, "12", "123", "topic", "ok", efg, true) }, goldenReply},
		{"push", func() ([]byte, bool, error) { return V2.AppendPush(nil, "12", "topic", "event", efg, true) }, goldenServerPush},
		{"broadcast", func() ([]byte, bool, error) { return V2.AppendBroadcast(nil, "topic", "event", efg, true) }, goldenBroadcast},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, bin, err := tc.enc()
			if err != nil || !bin || !bytes.Equal(got, tc.want) {
				t.Fatalf("got % x, %v, %v; want % x", got, bin, err, tc.want)
			}
		})
	}
}

func TestBinaryFieldLimits(t *testing.T) {
	max, over := strings.Repeat("x", 255), strings.Repeat("x", 256)
	p := []byte{1}
	for _, tc := range []struct {
		name string
		enc  func(s string) ([]byte, bool, error)
	}{
		{"reply join_ref", func(s string) ([]byte, bool, error) { return V2.AppendReply(nil, s, "1", "t", "ok", p, true) }},
		{"reply ref", func(s string) ([]byte, bool, error) { return V2.AppendReply(nil, "1", s, "t", "ok", p, true) }},
		{"reply topic", func(s string) ([]byte, bool, error) { return V2.AppendReply(nil, "1", "1", s, "ok", p, true) }},
		{"reply status", func(s string) ([]byte, bool, error) { return V2.AppendReply(nil, "1", "1", "t", s, p, true) }},
		{"push join_ref", func(s string) ([]byte, bool, error) { return V2.AppendPush(nil, s, "t", "e", p, true) }},
		{"push topic", func(s string) ([]byte, bool, error) { return V2.AppendPush(nil, "1", s, "e", p, true) }},
		{"push event", func(s string) ([]byte, bool, error) { return V2.AppendPush(nil, "1", "t", s, p, true) }},
		{"broadcast topic", func(s string) ([]byte, bool, error) { return V2.AppendBroadcast(nil, s, "e", p, true) }},
		{"broadcast event", func(s string) ([]byte, bool, error) { return V2.AppendBroadcast(nil, "t", s, p, true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := tc.enc(max); err != nil {
				t.Errorf("255 bytes: %v", err)
			}
			got, bin, err := tc.enc(over)
			if !errors.Is(err, ErrFieldTooLong) || got != nil || bin {
				t.Errorf("256 bytes: got %q, %v, %v; want ErrFieldTooLong and dst unchanged", got, bin, err)
			}
		})
	}
}

func TestV1RejectsBinary(t *testing.T) {
	dst := []byte("keep")
	for name, enc := range map[string]func() ([]byte, bool, error){
		"reply":     func() ([]byte, bool, error) { return V1.AppendReply(dst, "1", "1", "t", "ok", []byte{1}, true) },
		"push":      func() ([]byte, bool, error) { return V1.AppendPush(dst, "1", "t", "e", []byte{1}, true) },
		"broadcast": func() ([]byte, bool, error) { return V1.AppendBroadcast(dst, "t", "e", []byte{1}, true) },
	} {
		t.Run(name, func(t *testing.T) {
			got, _, err := enc()
			if !errors.Is(err, ErrBinaryUnsupported) || string(got) != "keep" {
				t.Errorf("got %q, %v; want ErrBinaryUnsupported and dst unchanged", got, err)
			}
		})
	}
	if _, err := V1.Decode([]byte(`{"topic":"t","event":"e","payload":{},"ref":null}`), true); !errors.Is(err, ErrMalformed) {
		t.Errorf("V1 binary frame: %v, want ErrMalformed", err)
	}
}

func TestEncodeExact(t *testing.T) {
	p := []byte(`{"m":1}`)
	for _, tc := range []struct {
		name string
		enc  func() ([]byte, bool, error)
		want string
	}{
		// Phoenix's own test vector (@v2_fastlane_json).
		{"v2 fastlane", func() ([]byte, bool, error) { return V2.AppendBroadcast(nil, "t", "e", p, false) }, `[null,null,"t","e",{"m":1}]`},
		{"v2 push", func() ([]byte, bool, error) { return V2.AppendPush(nil, "5", "t", "e", p, false) }, `["5",null,"t","e",{"m":1}]`},
		{"v2 push no join_ref", func() ([]byte, bool, error) { return V2.AppendPush(nil, "", "t", "e", p, false) }, `[null,null,"t","e",{"m":1}]`},
		{"v2 reply null refs", func() ([]byte, bool, error) { return V2.AppendReply(nil, "", "", "t", "ok", p, false) }, `[null,null,"t","phx_reply",{"response":{"m":1},"status":"ok"}]`},
		{"v2 empty payload", func() ([]byte, bool, error) { return V2.AppendPush(nil, "1", "t", "e", nil, false) }, `["1",null,"t","e",{}]`},
		{"v2 string payload", func() ([]byte, bool, error) { return V2.AppendBroadcast(nil, "t", "e", []byte(`"s"`), false) }, `[null,null,"t","e","s"]`},
		{"v2 close", func() ([]byte, bool, error) { return V2.AppendClose(nil, "7", "t") }, `["7","7","t","phx_close",{}]`},
		{"v2 error", func() ([]byte, bool, error) { return V2.AppendError(nil, "7", "t") }, `["7","7","t","phx_error",{}]`},
		{"v2 escaped", func() ([]byte, bool, error) {
			return V2.AppendReply(nil, "j\"", "r\\", "t</script>&", "ok\n", p, false)
		}, `["j\"","r\\","t</script>&","phx_reply",{"response":{"m":1},"status":"ok\n"}]`},
		{"v1 reply", func() ([]byte, bool, error) { return V1.AppendReply(nil, "1", "2", "t", "ok", p, false) }, `{"event":"phx_reply","payload":{"response":{"m":1},"status":"ok"},"ref":"2","topic":"t"}`},
		{"v1 push drops join_ref", func() ([]byte, bool, error) { return V1.AppendPush(nil, "1", "t", "e", p, false) }, `{"event":"e","payload":{"m":1},"ref":null,"topic":"t"}`},
		{"v1 broadcast", func() ([]byte, bool, error) { return V1.AppendBroadcast(nil, "t", "e", p, false) }, `{"event":"e","payload":{"m":1},"ref":null,"topic":"t"}`},
		{"v1 close", func() ([]byte, bool, error) { return V1.AppendClose(nil, "3", "t") }, `{"event":"phx_close","payload":{},"ref":"3","topic":"t"}`},
		{"v1 error", func() ([]byte, bool, error) { return V1.AppendError(nil, "3", "t") }, `{"event":"phx_error","payload":{},"ref":"3","topic":"t"}`},
		{"v1 empty ref", func() ([]byte, bool, error) { return V1.AppendReply(nil, "", "", "t", "ok", nil, false) }, `{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":null,"topic":"t"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, bin, err := tc.enc()
			if err != nil || bin || string(got) != tc.want {
				t.Errorf("got %s, %v, %v\nwant %s", got, bin, err, tc.want)
			}
		})
	}
	t.Run("appends to dst", func(t *testing.T) {
		dst := []byte("prefix|")
		got, _, _ := V2.AppendClose(dst, "1", "t")
		if string(got) != `prefix|["1","1","t","phx_close",{}]` {
			t.Errorf("got %s", got)
		}
	})
}

func sameMessage(a, b Message) bool {
	return a.JoinRef == b.JoinRef && a.Ref == b.Ref && a.Topic == b.Topic && a.Event == b.Event &&
		bytes.Equal(a.Payload, b.Payload) && a.Binary == b.Binary
}

func TestDecodeValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		ser  Serializer
		in   string
		want Message
	}{
		{"v2 join", V2, `["1","1","rooms:lobby","phx_join",{}]`, Message{"1", "1", "rooms:lobby", "phx_join", []byte(`{}`), false}},
		{"v2 heartbeat", V2, `[null,"4","phoenix","heartbeat",{}]`, Message{"", "4", "phoenix", "heartbeat", []byte(`{}`), false}},
		{"v2 null refs", V2, `[null,null,"t","e",{"a":[1,2,{"b":null}]}]`, Message{"", "", "t", "e", []byte(`{"a":[1,2,{"b":null}]}`), false}},
		{"v2 string payload", V2, `["1","1","rooms:lobby","phx_join","str"]`, Message{"1", "1", "rooms:lobby", "phx_join", []byte(`"str"`), false}},
		{"v2 number payload", V2, `["1","1","t","e",-1.5e+3]`, Message{"1", "1", "t", "e", []byte(`-1.5e+3`), false}},
		{"v2 whitespace", V2, " \t\r\n[ \"1\" , null ,\n\"t\" ,\"e\" , { \"x\" : 1 } ] \n", Message{"1", "", "t", "e", []byte(`{ "x" : 1 }`), false}},
		{"v2 extra elements", V2, `["1","2","t","e",{},"extra",[1],{"z":true}]`, Message{"1", "2", "t", "e", []byte(`{}`), false}},
		{"v2 escapes", V2, `["\u0031","a\"b","t\\\/","\u00e9\ud83d\ude00\n",{}]`, Message{"1", `a"b`, `t\/`, "é😀\n", []byte(`{}`), false}},
		{"v2 unicode raw", V2, `["1","1","räum:🎉","e",{"k":"ü"}]`, Message{"1", "1", "räum:🎉", "e", []byte(`{"k":"ü"}`), false}},
		{"v2 empty strings", V2, `["","","","",{}]`, Message{"", "", "", "", []byte(`{}`), false}},
		{"v2 binary push", V2, "\x00\x01\x01\x0b\x04" + "12rooms:lobbyping\x01\x02\x03\xfe\xff", Message{"1", "2", "rooms:lobby", "ping", []byte{1, 2, 3, 0xfe, 0xff}, true}},
		{"v2 binary empty", V2, "\x00\x00\x00\x00\x00", Message{"", "", "", "", []byte{}, true}},
		{"v1 join", V1, `{"topic":"rooms:lobby","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}`, Message{"1", "1", "rooms:lobby", "phx_join", []byte(`{}`), false}},
		{"v1 no join_ref", V1, `{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"4"}`, Message{"", "4", "phoenix", "heartbeat", []byte(`{}`), false}},
		{"v1 null ref and join_ref", V1, `{"join_ref":null,"ref":null,"payload":[1],"event":"e","topic":"t"}`, Message{"", "", "t", "e", []byte(`[1]`), false}},
		{"v1 unknown keys", V1, `{"x":{"topic":1},"topic":"t","event":"e","payload":"p","ref":"1","y":[]}`, Message{"", "1", "t", "e", []byte(`"p"`), false}},
		{"v1 duplicate keys first wins", V1, `{"topic":"first","event":"e","payload":{"a":1},"ref":"1","topic":2,"payload":{"b":2}}`, Message{"", "1", "first", "e", []byte(`{"a":1}`), false}},
		{"v1 escaped key", V1, `{"\u0074opic":"t","event":"e","payload":{},"ref":"1"}`, Message{"", "1", "t", "e", []byte(`{}`), false}},
		{"v1 big payload between fields", V1, `{"topic":"t","payload":{"body":"` + strings.Repeat("x", 200) + `"},"event":"e","ref":"1"}`, Message{"", "1", "t", "e", []byte(`{"body":"` + strings.Repeat("x", 200) + `"}`), false}},
		{"v1 whitespace", V1, " { \"topic\" : \"t\" ,\"event\":\"e\", \"payload\" : true , \"ref\" : null } ", Message{"", "", "t", "e", []byte(`true`), false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.ser.Decode([]byte(tc.in), tc.want.Binary)
			if err != nil || !sameMessage(m, tc.want) {
				t.Errorf("got %+v, %v\nwant %+v", m, err, tc.want)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	deep := strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1)
	for _, tc := range []struct {
		name   string
		ser    Serializer
		in     string
		binary bool
	}{
		{"v2 empty", V2, ``, false},
		{"v2 spaces", V2, `  `, false},
		{"v2 not json", V2, `hello`, false},
		{"v2 number", V2, `42`, false},
		{"v2 null", V2, `null`, false},
		{"v2 string", V2, `"x"`, false},
		{"v2 object", V2, `{"topic":"rooms:lobby","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}`, false},
		{"v2 empty array", V2, `[]`, false},
		{"v2 short array", V2, `["1","1","rooms:lobby"]`, false},
		{"v2 four elements", V2, `["1","1","t","e"]`, false},
		{"v2 trailing comma", V2, `["1","1","t","e",]`, false},
		{"v2 trailing comma after payload", V2, `["1","1","t","e",{},]`, false},
		{"v2 unterminated", V2, `["1","1","t","e",{}`, false},
		{"v2 trailing garbage", V2, `["1","1","t","e",{}]x`, false},
		{"v2 two values", V2, `["1","1","t","e",{}][]`, false},
		{"v2 numeric join_ref", V2, `[1,"1","t","e",{}]`, false},
		{"v2 numeric ref", V2, `["1",1,"t","e",{}]`, false},
		{"v2 null topic", V2, `["1","1",null,"e",{}]`, false},
		{"v2 object event", V2, `["1","1","t",{},{}]`, false},
		{"v2 bad payload", V2, `["1","1","t","e",{"a"}]`, false},
		{"v2 bad literal", V2, `["1","1","t","e",nul]`, false},
		{"v2 bad number", V2, `["1","1","t","e",01]`, false},
		{"v2 bad number frac", V2, `["1","1","t","e",1.]`, false},
		{"v2 bad number exp", V2, `["1","1","t","e",1e]`, false},
		{"v2 bad number plus", V2, `["1","1","t","e",+1]`, false},
		{"v2 bad extra", V2, `["1","1","t","e",{},tru]`, false},
		{"v2 control char", V2, "[\"1\",\"1\",\"t\x01\",\"e\",{}]", false},
		{"v2 bad escape", V2, `["1","1","t\x","e",{}]`, false},
		{"v2 short unicode escape", V2, `["1","1","t\u12","e",{}]`, false},
		{"v2 lone high surrogate", V2, `["1","1","\ud800","e",{}]`, false},
		{"v2 high surrogate then non-low", V2, `["1","1","\ud800\u0041","e",{}]`, false},
		{"v2 lone low surrogate", V2, `["1","1","t","e",{"k":"\udc00"}]`, false},
		{"v2 invalid utf8", V2, "[\"1\",\"1\",\"t\xff\",\"e\",{}]", false},
		{"v2 invalid utf8 in payload", V2, "[\"1\",\"1\",\"t\",\"e\",{\"k\":\"\xc3\x28\"}]", false},
		{"v2 utf8 surrogate bytes", V2, "[\"1\",\"1\",\"t\",\"e\",\"\xed\xa0\x80\"]", false},
		{"v2 single quotes", V2, `['1','1','t','e',{}]`, false},
		{"v2 too deep", V2, `["1","1","t","e",` + deep + `]`, false},
		{"v2 bom", V2, "\xef\xbb\xbf[\"1\",\"1\",\"t\",\"e\",{}]", false},
		{"v2 binary empty", V2, "", true},
		{"v2 binary garbage", V2, "\xff\x01\x02", true},
		{"v2 binary reply kind", V2, string(goldenReply), true},
		{"v2 binary broadcast kind", V2, string(goldenBroadcast), true},
		{"v2 binary short header", V2, "\x00\x01\x01\x01", true},
		{"v2 binary fields overrun", V2, "\x00\x02\x03\x05\x06" + "12" + "123" + "topic" + "even", true},
		{"v2 binary json text", V2, `["1","1","t","e",{}]`, true},
		{"v1 empty", V1, ``, false},
		{"v1 not json", V1, `hello`, false},
		{"v1 number", V1, `42`, false},
		{"v1 array", V1, `["1","1","rooms:lobby","phx_join",{}]`, false},
		{"v1 missing ref", V1, `{"topic":"rooms:lobby","event":"phx_join","payload":{}}`, false},
		{"v1 missing topic", V1, `{"event":"e","payload":{},"ref":"1"}`, false},
		{"v1 missing event", V1, `{"topic":"t","payload":{},"ref":"1"}`, false},
		{"v1 missing payload", V1, `{"topic":"t","event":"e","ref":"1"}`, false},
		{"v1 empty object", V1, `{}`, false},
		{"v1 numeric topic", V1, `{"topic":1,"event":"e","payload":{},"ref":"1"}`, false},
		{"v1 null event", V1, `{"topic":"t","event":null,"payload":{},"ref":"1"}`, false},
		{"v1 numeric ref", V1, `{"topic":"t","event":"e","payload":{},"ref":1}`, false},
		{"v1 object join_ref", V1, `{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":{}}`, false},
		{"v1 trailing comma", V1, `{"topic":"t","event":"e","payload":{},"ref":"1",}`, false},
		{"v1 missing colon", V1, `{"topic" "t","event":"e","payload":{},"ref":"1"}`, false},
		{"v1 bad unknown value", V1, `{"topic":"t","event":"e","payload":{},"ref":"1","x":[1,]}`, false},
		{"v1 bad duplicate value", V1, `{"topic":"t","event":"e","payload":{},"ref":"1","topic":x}`, false},
		{"v1 trailing garbage", V1, `{"topic":"t","event":"e","payload":{},"ref":"1"} x`, false},
		{"v1 unquoted key", V1, `{topic:"t","event":"e","payload":{},"ref":"1"}`, false},
		{"v1 invalid utf8 key", V1, "{\"\xff\":1,\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":\"1\"}", false},
		{"v1 unterminated", V1, `{"topic":"t","event":"e","payload":{},"ref":"1"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.ser.Decode([]byte(tc.in), tc.binary)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %+v, %v; want ErrMalformed", m, err)
			}
			if !strings.HasPrefix(err.Error(), ErrMalformed.Error()+": ") {
				t.Errorf("error %q does not say what is wrong", err)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	topics := []string{"rooms:lobby", "", `q"uote\back/slash`, "ctl\x00\x1f\x7f\b\f\n\r\t", "<html>&amp;", "ünï©ødé 😀 \u2028\u2029", "phoenix"}
	payloads := [][]byte{[]byte(`{}`), []byte(`{"body":"hi","n":[1,2.5,true,null]}`), []byte(`"str"`), []byte(`[]`), []byte(`0`)}
	for _, ser := range []Serializer{V1, V2} {
		for ti, topic := range topics {
			for pi, payload := range payloads {
				event, ref, joinRef := topic+"!", "r"+topic, "j"+topic
				check := func(name string, frame []byte, want Message) {
					t.Helper()
					m, err := ser.Decode(frame, false)
					if err != nil || !sameMessage(m, want) {
						t.Errorf("%s %s topic#%d payload#%d: frame %q decodes to %+v, %v\nwant %+v", ser.Vsn(), name, ti, pi, frame, m, err, want)
					}
				}
				b, _, err := ser.AppendPush(nil, joinRef, topic, event, payload, false)
				if err != nil {
					t.Fatal(err)
				}
				wantJR := joinRef
				if ser == V1 {
					wantJR = ""
				}
				check("push", b, Message{JoinRef: wantJR, Topic: topic, Event: event, Payload: payload})

				b, _, _ = ser.AppendBroadcast(nil, topic, event, payload, false)
				check("broadcast", b, Message{Topic: topic, Event: event, Payload: payload})

				b, _, _ = ser.AppendReply(nil, joinRef, ref, topic, "ok", payload, false)
				reply := append(append([]byte(`{"response":`), payload...), `,"status":"ok"}`...)
				check("reply", b, Message{JoinRef: wantJR, Ref: ref, Topic: topic, Event: "phx_reply", Payload: reply})

				b, _, _ = ser.AppendClose(nil, joinRef, topic)
				check("close", b, Message{JoinRef: wantJR, Ref: joinRef, Topic: topic, Event: "phx_close", Payload: []byte(`{}`)})

				b, _, _ = ser.AppendError(nil, joinRef, topic)
				check("error", b, Message{JoinRef: wantJR, Ref: joinRef, Topic: topic, Event: "phx_error", Payload: []byte(`{}`)})
			}
		}
	}
	t.Run("binary client push", func(t *testing.T) {
		for _, topic := range topics {
			want := Message{JoinRef: "1", Ref: "22", Topic: topic, Event: "ev", Payload: []byte{0, 1, 0xff}, Binary: true}
			m, err := V2.Decode(encodeClientV2(want), true)
			if err != nil || !sameMessage(m, want) {
				t.Errorf("got %+v, %v; want %+v", m, err, want)
			}
		}
	})
	t.Run("invalid utf8 becomes U+FFFD", func(t *testing.T) {
		b, _, _ := V2.AppendBroadcast(nil, "a\xffb", "e", nil, false)
		m, err := V2.Decode(b, false)
		if err != nil || m.Topic != "a\uFFFDb" {
			t.Errorf("got %q, %v", m.Topic, err)
		}
	})
}

func TestAppendJSONString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `""`},
		{"rooms:lobby", `"rooms:lobby"`},
		{`"`, `"\""`},
		{`\`, `"\\"`},
		{"/", `"/"`},
		{"\b\f\n\r\t", `"\b\f\n\r\t"`},
		{"\x00\x01\x1f", `"\u0000\u0001\u001F"`},
		{"\x7f", "\"\x7f\""},
		{"<>&", `"<>&"`},
		{"\u2028\u2029", "\"\u2028\u2029\""},
		{"é😀", `"é😀"`},
		{"a\xffb", `"a\ufffdb"`},
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},
		{"\xf0\x9f\x98", `"\ufffd\ufffd\ufffd"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := string(AppendJSONString(nil, tc.in)); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestForVsn(t *testing.T) {
	for _, tc := range []struct {
		vsn  string
		want Serializer
	}{
		{"", V1},
		{"1.0.0", V1},
		{"1.0.7", V1},
		{"1.0.1-rc.1", V1},
		{"1.0.0+build.5", V1},
		{"2.0.0", V2},
		{"2.0.5", V2},
		{"2.0.10", V2},
		{"2.0.99999999999999999999999", V2},
		{"2.0.1-dev", V2},
		{"2.0.1-alpha-1.0", V2},
		{"2.0.0+20130417140000", V2},
		{"2.0.0+exp.sha.5114f85", V2},
		{"3.0.0", nil},
		{"2.1.0", nil},
		{"1.1.0", nil},
		{"0.0.1", nil},
		{"2.0.0-rc.1", nil}, // pre-release of 2.0.0 sorts below the >= 2.0.0 bound
		{"1.0.0-beta", nil},
		{"2.0", nil},
		{"2", nil},
		{"2.0.0.0", nil},
		{"02.0.0", nil},
		{"2.00.0", nil},
		{"2.0.00", nil},
		{"2.0.01", nil},
		{"2.0.1-01", nil},
		{"2.0.1-", nil},
		{"2.0.1-a..b", nil},
		{"2.0.0+", nil},
		{"2.0.0+a_b", nil},
		{"v2.0.0", nil},
		{" 2.0.0", nil},
		{"2.0.0 ", nil},
		{"abc", nil},
		{"2.0.x", nil},
		{"-2.0.0", nil},
	} {
		t.Run(tc.vsn, func(t *testing.T) {
			got, err := ForVsn(tc.vsn)
			if tc.want == nil {
				if got != nil || !errors.Is(err, ErrUnsupportedVsn) {
					t.Errorf("got %v, %v; want ErrUnsupportedVsn", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %v, %v; want %s", got, err, tc.want.Vsn())
			}
		})
	}
	if V1.Vsn() != "1.0.0" || V2.Vsn() != "2.0.0" {
		t.Errorf("Vsn() = %q, %q", V1.Vsn(), V2.Vsn())
	}
}

// TestDecodeAllocs pins the one-allocation-per-frame property of the fast
// path, since it is what keeps decode cheap at gateway rates.
func TestDecodeAllocs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ser    Serializer
		in     []byte
		binary bool
	}{
		{"v2 text", V2, []byte(`["1","2","rooms:lobby","new_msg",{"body":"hi there"}]`), false},
		{"v2 binary", V2, goldenClientPush, true},
		{"v1", V1, []byte(`{"topic":"rooms:lobby","event":"new_msg","payload":{"body":"hi"},"ref":"3","join_ref":"1"}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testing.AllocsPerRun(100, func() {
				if _, err := tc.ser.Decode(tc.in, tc.binary); err != nil {
					t.Fatal(err)
				}
			})
			if n > 1 {
				t.Errorf("%v allocs per Decode, want <= 1", n)
			}
		})
	}
	buf := make([]byte, 0, 512)
	resp := []byte(`{"a":1}`)
	if n := testing.AllocsPerRun(100, func() {
		buf, _, _ = V2.AppendReply(buf[:0], "1", "2", "rooms:lobby", "ok", resp, false)
	}); n != 0 {
		t.Errorf("%v allocs per AppendReply into a big enough buffer, want 0", n)
	}
}

// A history channel's broadcast carries its position as the ref, in the
// slot phoenix.js reads a ref from in each serializer; the rest is the
// same as the broadcast without it.
func TestAppendBroadcastRef(t *testing.T) {
	payload := []byte(`{"body":"hi"}`)
	for _, tc := range []struct {
		ser  Serializer
		want string
	}{
		{V2, `[null,"812","rooms:lobby","new_msg",{"body":"hi"}]`},
		{V1, `{"event":"new_msg","payload":{"body":"hi"},"ref":"812","topic":"rooms:lobby"}`},
	} {
		got := tc.ser.AppendBroadcastRef(nil, "812", "rooms:lobby", "new_msg", payload)
		if string(got) != tc.want {
			t.Errorf("%s: %s, want %s", tc.ser.Vsn(), got, tc.want)
		}
		m, err := tc.ser.Decode(got, false)
		if err != nil || m.Ref != "812" || m.Topic != "rooms:lobby" || m.Event != "new_msg" || string(m.Payload) != string(payload) {
			t.Errorf("%s: decodes as %+v, %v", tc.ser.Vsn(), m, err)
		}
	}
}
