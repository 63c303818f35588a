package session

import (
	"errors"

	"github.com/phxnats/phxnats/gateway/wire"
	"github.com/phxnats/phxnats/proto"
)

// Whether a client can carry bytes is decided here, once, by the
// serializer its transport reports: V1 frames are JSON only
// (wire.ErrBinaryUnsupported), and a transport whose client takes no
// binary frame at all (long-poll: phoenix.js JSON-parses every message of
// a poll) reports a TextOnly serializer. Bytes such a client cannot carry
// reach it as the same message with an error in their place: a reply
// {"status":"error","response":{"reason":R}}, a push or broadcast of the
// same event with {"error":R}.

// TextOnly returns a serializer like ser that refuses binary payloads,
// with reason as the error the client gets instead. Make it once per
// transport: the fan-out encodes a broadcast once per distinct serializer.
func TextOnly(ser wire.Serializer, reason string) wire.Serializer {
	return &textOnly{Serializer: ser, refused: newRefusal(reason)}
}

type textOnly struct {
	wire.Serializer
	refused *refusal
}

// AppendReply refuses a binary response; see wire.Serializer.
func (t *textOnly) AppendReply(dst []byte, joinRef, ref, topic, status string, response []byte, binary bool) ([]byte, bool, error) {
	if binary {
		return dst, false, t.refused
	}
	return t.Serializer.AppendReply(dst, joinRef, ref, topic, status, response, false)
}

// AppendPush refuses a binary payload; see wire.Serializer.
func (t *textOnly) AppendPush(dst []byte, joinRef, topic, event string, payload []byte, binary bool) ([]byte, bool, error) {
	if binary {
		return dst, false, t.refused
	}
	return t.Serializer.AppendPush(dst, joinRef, topic, event, payload, false)
}

// AppendBroadcast refuses a binary payload; see wire.Serializer.
func (t *textOnly) AppendBroadcast(dst []byte, topic, event string, payload []byte, binary bool) ([]byte, bool, error) {
	if binary {
		return dst, false, t.refused
	}
	return t.Serializer.AppendBroadcast(dst, topic, event, payload, false)
}

// refusal is wire.ErrBinaryUnsupported with what the client gets instead.
type refusal struct {
	reason  string
	payload []byte // {"error": reason}
}

func newRefusal(reason string) *refusal {
	p, _ := proto.Marshal(map[string]string{"error": reason})
	return &refusal{reason: reason, payload: p}
}

// Error says what was refused and why.
func (r *refusal) Error() string { return wire.ErrBinaryUnsupported.Error() + ": " + r.reason }

// Is makes a refusal a wire.ErrBinaryUnsupported.
func (r *refusal) Is(target error) bool { return target == wire.ErrBinaryUnsupported }

// v1Refusal is what V1 clients get in place of bytes.
var v1Refusal = newRefusal(proto.BinaryUnsupported)

// refused returns what to send instead after an encoder refused bytes, or
// nil when err is another error.
func refused(err error) *refusal {
	var r *refusal
	if errors.As(err, &r) {
		return r
	}
	if errors.Is(err, wire.ErrBinaryUnsupported) {
		return v1Refusal
	}
	return nil
}

// AppendBroadcast encodes a broadcast for ser; a binary payload the client
// cannot carry becomes the same event with {"error": reason}.
func AppendBroadcast(dst []byte, ser wire.Serializer, topic, event string, payload []byte, binary bool) ([]byte, bool, error) {
	data, bin, err := ser.AppendBroadcast(dst, topic, event, payload, binary)
	if r := refused(err); binary && r != nil {
		return ser.AppendBroadcast(dst, topic, event, r.payload, false)
	}
	return data, bin, err
}
