// Package wsframe is RFC 6455 framing without state: appending frame
// headers and parsing them, for the gateway's WebSocket transport (package
// ws) and for the load generator, which reads and writes the same frames
// from the other side.
//
// It knows bytes only: what a frame means to a connection (fragments,
// limits, close handshakes) is the caller's.
package wsframe

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"
)

// Frame opcodes (RFC 6455 section 5.2).
const (
	OpContinuation byte = 0
	OpText         byte = 1
	OpBinary       byte = 2
	OpClose        byte = 8
	OpPing         byte = 9
	OpPong         byte = 10
)

// Close codes (RFC 6455 section 7.4.1) the gateway and its clients use.
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseUnsupportedData = 1003
	CloseNoStatus        = 1005 // never sent: a close frame without a code
	CloseInvalidPayload  = 1007
	ClosePolicyViolation = 1008
	CloseMessageTooBig   = 1009
	CloseMandatoryExt    = 1010
	CloseInternalError   = 1011
	CloseServiceRestart  = 1012
	CloseTryAgainLater   = 1013
)

// MaxControlPayload is the largest payload of a control frame (close,
// ping, pong).
const MaxControlPayload = 125

// AppendHeader appends the header of a final, unmasked frame with an n-byte
// payload: every frame a server sends.
func AppendHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op)
	switch {
	case n <= 125:
		return append(dst, byte(n))
	case n <= 0xFFFF:
		return append(dst, 126, byte(n>>8), byte(n))
	default:
		return append(dst, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// AppendMaskedHeader appends the header of a final frame masked with key,
// as a client sends it; the payload that follows must be masked with
// Mask and the same key.
func AppendMaskedHeader(dst []byte, op byte, n int, key [4]byte) []byte {
	start := len(dst)
	dst = AppendHeader(dst, op, n)
	dst[start+1] |= 0x80
	return append(dst, key[:]...)
}

// Header is a parsed frame header.
type Header struct {
	Fin    bool
	Rsv    byte // the three reserved bits, 0 unless an extension was negotiated
	Op     byte
	Masked bool
	Key    [4]byte // the masking key, when Masked
	Length uint64  // payload length
}

// Control reports whether the frame is a control frame (close, ping, pong
// or a reserved control opcode).
func (h Header) Control() bool { return h.Op >= OpClose }

// ErrLength is returned for a 64-bit payload length with its top bit set,
// which RFC 6455 forbids.
var ErrLength = errors.New("invalid frame length")

// ParseHeader parses the frame header at the start of b and returns it
// with its size in bytes. A size of 0 (and no error) means b does not yet
// hold the payload length; Fin, Rsv, Op and Masked are set all the same
// once b holds two bytes, on error too. The size may exceed len(b): b then holds the
// length but not all of the masking key (Key is not set), which lets a
// reader refuse a frame over its limit before the rest arrives. The
// payload follows the header; whether b holds all of it is the caller's
// to check against Length.
func ParseHeader(b []byte) (h Header, size int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	b0, b1 := b[0], b[1]
	h.Fin, h.Rsv, h.Op, h.Masked = b0&0x80 != 0, (b0>>4)&7, b0&0x0f, b1&0x80 != 0
	n, size := uint64(b1&0x7f), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		n, size = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		n, size = binary.BigEndian.Uint64(b[2:]), 10
		if n>>63 != 0 {
			return h, 0, ErrLength
		}
	}
	h.Length = n
	if h.Masked {
		if len(b) >= size+4 {
			copy(h.Key[:], b[size:size+4])
		}
		size += 4
	}
	return h, size, nil
}

// Mask masks or unmasks payload in place with key (the same operation).
func Mask(payload []byte, key [4]byte) {
	for i := range payload {
		payload[i] ^= key[i&3]
	}
}

// Close frame payload errors.
var (
	ErrClosePayload = errors.New("invalid close frame payload")
	ErrCloseCode    = errors.New("invalid close code")
	ErrCloseText    = errors.New("invalid utf8 payload in close frame")
)

// ParseClose reads a received close frame's payload: no payload is
// CloseNoStatus; a code a peer must not send, or a reason that is not
// UTF-8, is an error (gorilla/websocket reads it alike).
func ParseClose(p []byte) (code int, text string, err error) {
	switch {
	case len(p) == 0:
		return CloseNoStatus, "", nil
	case len(p) == 1:
		return 0, "", ErrClosePayload
	}
	code = int(binary.BigEndian.Uint16(p))
	if !ValidReceivedCloseCode(code) {
		return 0, "", ErrCloseCode
	}
	if !utf8.Valid(p[2:]) {
		return 0, "", ErrCloseText
	}
	return code, string(p[2:]), nil
}

// AppendClosePayload appends a close frame's payload: the code, then text.
func AppendClosePayload(dst []byte, code int, text string) []byte {
	return append(binary.BigEndian.AppendUint16(dst, uint16(code)), text...)
}

// ValidReceivedCloseCode reports whether a peer may send code in a close
// frame (gorilla/websocket's list).
func ValidReceivedCloseCode(code int) bool {
	switch code {
	case CloseNormal, CloseGoingAway, CloseProtocolError, CloseUnsupportedData,
		CloseInvalidPayload, ClosePolicyViolation, CloseMessageTooBig,
		CloseMandatoryExt, CloseInternalError, CloseServiceRestart, CloseTryAgainLater:
		return true
	}
	return code >= 3000 && code <= 4999
}
