package ws

import (
	"github.com/phxnats/phxnats/gateway/wsframe"
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
	// need is, with frameMore, the bytes of the whole frame once its
	// header is here (0 before): what the caller is to keep for it.
	need int
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

func protocolError(text string) frameResult {
	return frameResult{event: frameError, code: wsframe.CloseProtocolError, text: text}
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
	// The header's fields are set even when its length is not all here
	// or is invalid: a bad frame is refused as soon as its first two bytes
	// say so, with gorilla's checks in gorilla's order.
	h, hdr, err := wsframe.ParseHeader(b)
	op := h.Op
	if h.Rsv != 0 {
		return protocolError("unexpected reserved bits"), 0
	}
	switch op {
	case wsframe.OpContinuation:
		if r.op == 0 {
			return protocolError("continuation after final message frame"), 0
		}
	case wsframe.OpText, wsframe.OpBinary:
		if r.op != 0 {
			return protocolError("message start before final message frame"), 0
		}
	case wsframe.OpClose, wsframe.OpPing, wsframe.OpPong:
	default:
		return protocolError("unknown opcode"), 0
	}
	control := h.Control()
	if control && !h.Fin {
		return protocolError("control frame not final"), 0
	}
	if !h.Masked {
		return protocolError("incorrect mask flag"), 0
	}
	if err != nil {
		return protocolError(err.Error()), 0
	}
	if hdr == 0 {
		return frameResult{}, 0
	}
	n := h.Length
	if control && n > wsframe.MaxControlPayload {
		return protocolError("control frame length > 125"), 0
	}
	if !control && limit > 0 && uint64(len(r.msg))+n > uint64(limit) {
		return frameResult{event: frameError, code: wsframe.CloseMessageTooBig}, 0
	}
	if hdr > len(b) {
		return frameResult{}, 0 // the masking key is not all here
	}
	if uint64(len(b)-hdr) < n {
		return frameResult{need: hdr + int(n)}, 0
	}
	end := hdr + int(n)
	payload := b[hdr:end]
	wsframe.Mask(payload, h.Key)
	switch op {
	case wsframe.OpPing:
		return frameResult{event: framePing, data: payload}, end
	case wsframe.OpPong:
		return frameResult{event: framePong}, end
	case wsframe.OpClose:
		code, text, err := wsframe.ParseClose(payload)
		if err != nil {
			return protocolError(err.Error()), end
		}
		return frameResult{event: frameClose, code: code, text: text}, end
	}
	if op != wsframe.OpContinuation {
		r.op = op
	}
	if h.Fin && r.msg == nil {
		// The common case, a message in one frame, is not copied.
		res := frameResult{event: frameMessage, binary: r.op == wsframe.OpBinary, data: payload}
		r.op = 0
		return res, end
	}
	if need := len(r.msg) + len(payload); need > cap(r.msg) {
		// Grown by doubling, but never past the limit: what a socket
		// holds of a message stays within it.
		size := max(2*cap(r.msg), need)
		if limit > 0 {
			size = min(size, int(limit))
		}
		r.msg = append(make([]byte, 0, size), r.msg...)
	}
	r.msg = append(r.msg, payload...)
	if r.msg == nil {
		r.msg = []byte{} // an empty first fragment still starts a message
	}
	if !h.Fin {
		return frameResult{event: frameFragment}, end
	}
	res := frameResult{event: frameMessage, binary: r.op == wsframe.OpBinary, data: r.msg}
	r.op, r.msg = 0, nil
	return res, end
}
