package wire

import "testing"

func BenchmarkDecodeV2(b *testing.B) {
	for _, bc := range []struct {
		name   string
		in     []byte
		binary bool
	}{
		{"text", []byte(`["1","3","rooms:lobby","new_msg",{"body":"hi there","meta":{"n":1,"tags":["a","b"]}}]`), false},
		{"heartbeat", []byte(`[null,"4","phoenix","heartbeat",{}]`), false},
		{"binary", goldenClientPush, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.in)))
			for b.Loop() {
				if _, err := V2.Decode(bc.in, bc.binary); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeV1(b *testing.B) {
	in := []byte(`{"topic":"rooms:lobby","event":"new_msg","payload":{"body":"hi there"},"ref":"3","join_ref":"1"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := V1.Decode(in, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendBroadcastV2(b *testing.B) {
	payload := []byte(`{"body":"hi there","user":{"id":42,"name":"Jos\u00e9"}}`)
	for _, bc := range []struct {
		name   string
		binary bool
	}{{"text", false}, {"binary", true}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 256)
			for b.Loop() {
				buf, _, _ = V2.AppendBroadcast(buf[:0], "rooms:lobby", "new_msg", payload, bc.binary)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

func BenchmarkAppendReplyV1(b *testing.B) {
	b.ReportAllocs()
	resp := []byte(`{"hello":"world","n":1}`)
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf, _, _ = V1.AppendReply(buf[:0], "1", "2", "rooms:lobby", "ok", resp, false)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendJSONString(b *testing.B) {
	for _, bc := range []struct{ name, s string }{
		{"short", "rooms:lobby"},
		{"long-ascii", "room:the quick brown fox jumps over the lazy dog 0123456789"},
		{"unicode", "räum:ünï©ødé-😀-zimmer"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.s)))
			buf := make([]byte, 0, 256)
			for b.Loop() {
				buf = AppendJSONString(buf[:0], bc.s)
			}
		})
	}
}
