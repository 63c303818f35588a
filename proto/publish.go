package proto

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Publish posts event with payload into the Phoenix topic: every socket
// joined to it, on every gateway, receives [null,null,topic,event,payload].
//
// payload is marshalled with encoding/json unless it is already a
// json.RawMessage or []byte holding JSON; it must encode to a JSON object.
// Publish returns once the NATS server has the message (it flushes), so an
// error means the message may not have been sent.
//
// Any NATS client in any language can do the same by publishing the JSON
// {"event": E, "payload": P} on RoomSubject(topic), e.g.
//
//	nats pub phx.room.rooms:lobby '{"event":"new_msg","payload":{"body":"deploy finished"}}'
func Publish(ctx context.Context, nc *nats.Conn, topic, event string, payload any) error {
	subject, err := RoomSubject(topic)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	switch p := payload.(type) {
	case json.RawMessage:
		raw = p
	case []byte:
		raw = p
	default:
		if raw, err = Marshal(payload); err != nil {
			return fmt.Errorf("proto: payload: %w", err)
		}
	}
	return publish(ctx, nc, subject, Broadcast{Event: event, Payload: raw})
}

// PublishBinary posts event with raw bytes into the topic: V2 sockets
// receive a binary broadcast frame (an ArrayBuffer in phoenix.js), V1 sockets
// the event with {"error": BinaryUnsupported}.
func PublishBinary(ctx context.Context, nc *nats.Conn, topic, event string, data []byte) error {
	subject, err := RoomSubject(topic)
	if err != nil {
		return err
	}
	if data == nil {
		data = []byte{}
	}
	return publish(ctx, nc, subject, Broadcast{Event: event, Binary: data})
}

func publish(ctx context.Context, nc *nats.Conn, subject string, b Broadcast) error {
	if err := b.Validate(); err != nil {
		return err
	}
	data, err := Marshal(b)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := nc.Publish(subject, data); err != nil {
		return fmt.Errorf("proto: publish to %s: %w", subject, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		// nats.go refuses to flush with a context that has no deadline.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("proto: flush after publish to %s: %w", subject, err)
	}
	return nil
}
