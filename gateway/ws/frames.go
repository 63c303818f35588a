package ws

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// frameEvent is what the next client frame means to the socket.
type frameEvent int

const (
	frameMore     frameEvent = iota // no complete frame yet: read more
	frameFragment                   // a fragment taken in; nothing to do yet
	frameMessage                    // a whole text or binary message
	framePing
	framePong
	frameClose // the client's close frame (code and text in the result)
	frameError // a frame RFC 6455 refuses; close with code and text
)

// frameResult is one step of clientFrames.next.
type frameResult struct {
	event  frameEvent
	binary bool   // frameMessage: a binary message
	data   []byte // message or ping payload
	code   int    // frameClose: the client's code; frameError: ours
	text   string // frameClose: the client's reason; frameError: ours
}

// clientFrames reassembles the messages of a client's WebSocket stream
// from the bytes read off the socket, for the sockets read without a
// goroutine of their own (poll_linux.go). It holds no more than a
// fragmented message's payload so far, so an idle socket costs nothing
// here; the bytes of a frame not yet complete are the caller's to keep.
//
// It follows gorilla's reading of RFC 6455, which the goroutine reader
// uses, so that both readers treat a client alike: no extension is
// negotiated, so reserved bits are an error; client frames must be masked;
// control frames are at most 125 bytes and never fragmented; and a message
// over the size limit closes the socket with 1009.
type clientFrames struct {
	op  byte   // opcode of the fragmented message under way, 0 when none
	msg []byte // its payload so far
}

// Frame opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0
	opText         = websocket.TextMessage
	opBinary       = websocket.BinaryMessage
	opClose        = websocket.CloseMessage
	opPing         = websocket.PingMessage
	opPong         = websocket.PongMessage
)

func protocolError(text string) frameResult {
	return frameResult{event: frameError, code: websocket.CloseProtocolError, text: text}
}

// next parses the frame at the start of b, which must be the start of a
// frame, and reports what it means and how many bytes of b it used. A
// message or ping payload may alias b, which next unmasks in place; a
// message assembled from fragments is handed over and no longer held.
// With frameMore nothing of b is used or changed. limit bounds a
// message's payload (0: no bound), as gorilla's read limit does: a header
// that would take a message over it is refused at once, before its
// payload is read.
func (r *clientFrames) next(b []byte, limit int64) (frameResult, int) {
	if len(b) < 2 {
		return frameResult{}, 0
	}
	b0, b1 := b[0], b[1]
	fin, op := b0&0x80 != 0, b0&0x0f
	if b0&0x70 != 0 {
		return protocolError("unexpected reserved bits"), 0
	}
	control := op >= opClose
	switch op {
	case opContinuation:
		if r.op == 0 {
			return protocolError("continuation after final message frame"), 0
		}
	case opText, opBinary:
		if r.op != 0 {
			return protocolError("message start before final message frame"), 0
		}
	case opClose, opPing, opPong:
	default:
		return protocolError("unknown opcode"), 0
	}
	if control && !fin {
		return protocolError("control frame not final"), 0
	}
	if b1&0x80 == 0 {
		return protocolError("incorrect mask flag"), 0
	}
	n, hdr := uint64(b1&0x7f), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return frameResult{}, 0
		}
		n, hdr = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return frameResult{}, 0
		}
		n, hdr = binary.BigEndian.Uint64(b[2:]), 10
		if n>>63 != 0 {
			return protocolError("invalid frame length"), 0
		}
	}
	if control && n > 125 {
		return protocolError("control frame length > 125"), 0
	}
	if !control && limit > 0 && uint64(len(r.msg))+n > uint64(limit) {
		return frameResult{event: frameError, code: websocket.CloseMessageTooBig}, 0
	}
	if uint64(len(b)-hdr) < 4+n {
		return frameResult{}, 0
	}
	key := b[hdr : hdr+4]
	end := hdr + 4 + int(n)
	payload := b[hdr+4 : end]
	for i := range payload {
		payload[i] ^= key[i&3]
	}
	switch op {
	case opPing:
		return frameResult{event: framePing, data: payload}, end
	case opPong:
		return frameResult{event: framePong}, end
	case opClose:
		return closeFrame(payload), end
	}
	if op != opContinuation {
		r.op = op
	}
	if fin && r.msg == nil {
		// The common case, a message in one frame, is not copied.
		res := frameResult{event: frameMessage, binary: r.op == opBinary, data: payload}
		r.op = 0
		return res, end
	}
	r.msg = append(r.msg, payload...)
	if r.msg == nil {
		r.msg = []byte{} // an empty first fragment still starts a message
	}
	if !fin {
		return frameResult{event: frameFragment}, end
	}
	res := frameResult{event: frameMessage, binary: r.op == opBinary, data: r.msg}
	r.op, r.msg = 0, nil
	return res, end
}

// closeFrame reads a close frame's payload as gorilla does: no payload is
// 1005; a code the client must not send, or a reason that is not UTF-8, is
// a protocol error.
func closeFrame(p []byte) frameResult {
	switch {
	case len(p) == 0:
		return frameResult{event: frameClose, code: websocket.CloseNoStatusReceived}
	case len(p) == 1:
		return protocolError("invalid close frame payload")
	}
	code := int(binary.BigEndian.Uint16(p))
	if !validReceivedCloseCode(code) {
		return protocolError("invalid close code")
	}
	if !utf8.Valid(p[2:]) {
		return protocolError("invalid utf8 payload in close frame")
	}
	return frameResult{event: frameClose, code: code, text: string(p[2:])}
}

// validReceivedCloseCode is gorilla's list of the codes a peer may send.
func validReceivedCloseCode(code int) bool {
	switch code {
	case websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseProtocolError,
		websocket.CloseUnsupportedData, websocket.CloseInvalidFramePayloadData,
		websocket.ClosePolicyViolation, websocket.CloseMessageTooBig,
		websocket.CloseMandatoryExtension, websocket.CloseInternalServerErr,
		websocket.CloseServiceRestart, websocket.CloseTryAgainLater:
		return true
	}
	return code >= 3000 && code <= 4999
}
