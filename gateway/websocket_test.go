package gateway

import (
	"bytes"
	"testing"
)

func TestAppendFrameHeader(t *testing.T) {
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
		if got := appendFrameHeader(nil, 1, tt.n); !bytes.Equal(got, tt.want) {
			t.Errorf("n=%d: % x, want % x", tt.n, got, tt.want)
		}
	}
	if got := appendFrameHeader(nil, 2, 3); !bytes.Equal(got, []byte{0x82, 3}) {
		t.Errorf("binary: % x", got)
	}
}
