package wsframe

import (
	"bytes"
	"testing"
)

func TestAppendHeader(t *testing.T) {
	tests := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
		{1 << 20, []byte{0x81, 127, 0, 0, 0, 0, 0, 0x10, 0, 0}},
	}
	for _, tt := range tests {
		if got := AppendHeader(nil, 1, tt.n); !bytes.Equal(got, tt.want) {
			t.Errorf("n=%d: % x, want % x", tt.n, got, tt.want)
		}
	}
	if got := AppendHeader(nil, 2, 3); !bytes.Equal(got, []byte{0x82, 3}) {
		t.Errorf("binary: % x", got)
	}
}

// TestHeaderRoundTrip parses what AppendHeader and AppendMaskedHeader
// write, whole and cut short.
func TestHeaderRoundTrip(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 1 << 20} {
		for _, masked := range []bool{false, true} {
			b := AppendHeader(nil, OpBinary, n)
			if masked {
				b = AppendMaskedHeader(nil, OpBinary, n, key)
			}
			h, size, err := ParseHeader(b)
			if err != nil || size != len(b) || !h.Fin || h.Op != OpBinary || h.Masked != masked || h.Length != uint64(n) || (masked && h.Key != key) {
				t.Fatalf("n=%d masked=%v: %+v size %d err %v", n, masked, h, size, err)
			}
			for i := range len(b) {
				if _, size, err := ParseHeader(b[:i]); (size != 0 && size <= i) || err != nil {
					t.Fatalf("n=%d masked=%v cut at %d: size %d err %v", n, masked, i, size, err)
				}
			}
		}
	}
	if _, _, err := ParseHeader([]byte{0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}); err != ErrLength {
		t.Fatalf("negative length: %v", err)
	}
}

func TestParseClose(t *testing.T) {
	tests := []struct {
		payload []byte
		code    int
		text    string
		err     error
	}{
		{nil, CloseNoStatus, "", nil},
		{[]byte{3}, 0, "", ErrClosePayload},
		{AppendClosePayload(nil, 1000, "bye"), 1000, "bye", nil},
		{AppendClosePayload(nil, 4001, ""), 4001, "", nil},
		{AppendClosePayload(nil, 1005, ""), 0, "", ErrCloseCode},
		{AppendClosePayload(nil, 1000, "\xff"), 0, "", ErrCloseText},
	}
	for _, tt := range tests {
		code, text, err := ParseClose(tt.payload)
		if code != tt.code || text != tt.text || err != tt.err {
			t.Errorf("% x: %d %q %v, want %d %q %v", tt.payload, code, text, err, tt.code, tt.text, tt.err)
		}
	}
}

// FuzzParseHeader: any bytes give a header that fits in them, or ask for
// more, and never panic; a header written back parses the same.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x82, 126, 1, 0})
	f.Add([]byte{0x88, 127, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, size, err := ParseHeader(b)
		if err != nil || size == 0 || size > len(b) {
			return
		}
		if size > len(b) || size > 14 {
			t.Fatalf("header of %d bytes in %d", size, len(b))
		}
		var again []byte
		if h.Masked {
			again = AppendMaskedHeader(nil, h.Op, int(h.Length), h.Key)
		} else {
			again = AppendHeader(nil, h.Op, int(h.Length))
		}
		h2, _, err := ParseHeader(again)
		if err != nil || h2.Op != h.Op || h2.Length != h.Length || h2.Masked != h.Masked || h2.Key != h.Key {
			t.Fatalf("%+v written back parses as %+v (%v)", h, h2, err)
		}
	})
}
