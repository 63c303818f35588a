// Package proto is the contract between the gateway, authsvc, roomsvc and any
// other service on the same NATS: the subjects, who publishes and subscribes
// on each, and the JSON payloads.
//
// # Overview
//
//	browser ──Phoenix protocol──▶ gateway ──phx.auth.verify (req/reply)──▶ authsvc
//	                                 │ ──phx.svc.rooms.join / .push (req/reply)──▶ roomsvc
//	                                 ◀── stream PHX_ROOMS ◀── phx.room.<topic> ── roomsvc, other services
//
// Every payload is JSON. Requests go to queue groups, so services are
// stateless and scale by starting more instances; broadcasts are stored in
// the JetStream stream RoomStream and read by each gateway with one
// consumer of the whole stream, so that none is lost or reordered when NATS
// fails.
//
// # Topics and subjects
//
// A Phoenix topic is client text. It reaches a subject only through
// EncodeTopic, whose output can never contain '.', '*', '>' or white space:
// a topic cannot widen a subscription or address another room.
//
// # Publishing into a room from another service
//
// Publish the JSON {"event": E, "payload": P} on RoomSubject(topic), or call
// Publish, which waits for the stream's acknowledgement. P must be a JSON object and E must not start with "phx_";
// gateways drop anything else with a log line and a metric.
package proto
