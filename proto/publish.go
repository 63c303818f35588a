package proto

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publish posts event with payload into the Phoenix topic: every socket
// joined to it, on every gateway, receives [null,null,topic,event,payload].
//
// payload is marshalled with encoding/json unless it is already a
// json.RawMessage or []byte holding JSON; it must encode to a JSON object.
// Publish returns once RoomStream has stored the message: from then on
// every gateway with a socket in the room delivers it, even through a NATS
// node failure. An error means it may not have been stored; without a
// deadline on ctx, Publish gives up after 10s.
//
// Any NATS client in any language can do the same by publishing the JSON
// {"event": E, "payload": P} on RoomSubject(topic); a JetStream publish
// (or a request) gets the stream's acknowledgement back, a plain publish is
// stored all the same but unconfirmed, e.g.
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
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("proto: %w", err)
	}
	return publishBroadcast(ctx, js, subject, b)
}

// PublishBroadcast publishes b into topic through js and returns once
// RoomStream has stored it, which is when every gateway with a socket in the
// room is certain to deliver it. It is what roomsvc uses; other services
// can call Publish.
func PublishBroadcast(ctx context.Context, js jetstream.JetStream, topic string, b Broadcast) error {
	subject, err := RoomSubject(topic)
	if err != nil {
		return err
	}
	return publishBroadcast(ctx, js, subject, b)
}

func publishBroadcast(ctx context.Context, js jetstream.JetStream, subject string, b Broadcast) error {
	if err := b.Validate(); err != nil {
		return err
	}
	data, err := Marshal(b)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		// Retries run until the deadline: never wait forever.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	_, err = publishStored(ctx, js, subject, data)
	return err
}
