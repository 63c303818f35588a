package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/proto"
)

// client is one connection to NATS for one command.
type client struct {
	nc      *nats.Conn
	timeout time.Duration
}

func connect(cfg config) (*client, error) {
	opts := []nats.Option{
		nats.Name("chatctl"),
		nats.Timeout(cfg.Timeout),
		nats.NoReconnect(),
		nats.CustomInboxPrefix(inboxPrefix),
	}
	nkey, err := nkeyOption(cfg)
	if err != nil {
		return nil, err
	}
	if nkey != nil {
		opts = append(opts, nkey)
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if errors.Is(err, nats.ErrAuthorization) && nkey == nil {
		return nil, fmt.Errorf("cannot connect to NATS at %s: %v (no key given, and no %s here: run chatctl where make run runs, or name the key with --nats-nkey)",
			redactURLs(cfg.NATSURL), err, defaultNKey)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot connect to NATS at %s: %v", redactURLs(cfg.NATSURL), err)
	}
	return &client{nc: nc, timeout: cfg.Timeout}, nil
}

func (c *client) close() { c.nc.Close() }

func (c *client) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

// request sends req as JSON on subject and decodes the answer into rep.
// service names who should answer, for the error messages.
func (c *client) request(service, subject string, req, rep any) error {
	data, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := c.context()
	defer cancel()
	msg, err := c.nc.RequestWithContext(ctx, subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%s is not answering on %s (no responders)", service, subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%s did not answer on %s within %s (timeout)", service, subject, c.timeout)
	case err != nil:
		return fmt.Errorf("request to %s on %s: %v", service, subject, err)
	}
	if err := json.Unmarshal(msg.Data, rep); err != nil {
		return fmt.Errorf("%s answered on %s with something that is not its reply: %v", service, subject, err)
	}
	return nil
}

func cmdRooms(cfg config, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("rooms: missing subcommand (grant, revoke or members)")
	}
	sub, args := args[0], args[1:]
	var subject, done string
	switch sub {
	case "grant":
		subject, done = proto.SubjectMembersGrant, "granted"
	case "revoke":
		subject, done = proto.SubjectMembersRevoke, "revoked"
	case "members":
		if len(args) != 1 {
			return usagef("rooms members: want TOPIC, got %d argument(s)", len(args))
		}
		return roomMembers(cfg, args[0], stdout)
	case "who":
		if len(args) != 1 {
			return usagef("rooms who: want TOPIC, got %d argument(s)", len(args))
		}
		return roomWho(cfg, args[0], stdout)
	default:
		return usagef("rooms: unknown subcommand %q (want grant, revoke, members or who)", sub)
	}
	if cfg.JSON {
		return usagef("--json is only for rooms members and rooms who")
	}
	if len(args) != 2 {
		return usagef("rooms %s: want TOPIC USER, got %d argument(s)", sub, len(args))
	}
	topic, user := args[0], args[1]
	if err := proto.ValidUserID(user); err != nil {
		return invalidf("user %q: %v", user, err)
	}
	c, err := connect(cfg)
	if err != nil {
		return err
	}
	defer c.close()
	var rep proto.MembershipReply
	if err := c.request("roomsvc", subject, proto.MembershipRequest{Topic: topic, UserID: user}, &rep); err != nil {
		return err
	}
	if rep.Error != "" {
		return fmt.Errorf("roomsvc refused: %s", rep.Error)
	}
	fmt.Fprintf(stdout, "%s %s on %s\n", done, user, topic)
	return nil
}

func roomMembers(cfg config, topic string, stdout io.Writer) error {
	c, err := connect(cfg)
	if err != nil {
		return err
	}
	defer c.close()
	var rep proto.MembershipReply
	if err := c.request("roomsvc", proto.SubjectMembersList, proto.MembershipRequest{Topic: topic}, &rep); err != nil {
		return err
	}
	if rep.Error != "" {
		return fmt.Errorf("roomsvc refused: %s", rep.Error)
	}
	if cfg.JSON {
		members := rep.Members
		if members == nil {
			members = []string{} // [] rather than null for scripts
		}
		out, err := proto.Marshal(members)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", out)
		return nil
	}
	for _, m := range rep.Members {
		fmt.Fprintln(stdout, m)
	}
	return nil
}

// roomWho prints who is in topic now, across every gateway
// (proto.SubjectPresenceList): a user per line with the number of their
// sockets in the room; --json prints Phoenix's presence state.
func roomWho(cfg config, topic string, stdout io.Writer) error {
	if _, err := proto.EncodeTopic(topic); err != nil {
		return invalidf("topic %q: %v", topic, err)
	}
	c, err := connect(cfg)
	if err != nil {
		return err
	}
	defer c.close()
	var rep proto.PresenceListReply
	if err := c.request("roomsvc", proto.SubjectPresenceList, proto.PresenceListRequest{Topic: topic}, &rep); err != nil {
		return err
	}
	if rep.Error != "" {
		return fmt.Errorf("roomsvc refused: %s", rep.Error)
	}
	if cfg.JSON {
		st := rep.Presences
		if st == nil {
			st = proto.PresenceState{} // {} rather than null for scripts
		}
		out, err := proto.Marshal(st)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", out)
		return nil
	}
	for _, user := range rep.Presences.SortedUsers() {
		fmt.Fprintf(stdout, "%s %d\n", user, len(rep.Presences[user].Metas))
	}
	return nil
}

func cmdPublish(cfg config, args []string, stdout io.Writer) error {
	if len(args) != 3 {
		return usagef("publish: want TOPIC EVENT JSON, got %d argument(s)", len(args))
	}
	topic, event, payload := args[0], args[1], []byte(args[2])
	// Everything is checked before connecting, so a bad command line never
	// reaches NATS (and gets exit status 2).
	if !json.Valid(payload) {
		var v any
		err := json.Unmarshal(payload, &v)
		return invalidf("bad JSON payload: %v", err)
	}
	if t := bytes.TrimSpace(payload); len(t) == 0 || t[0] != '{' {
		return invalidf("bad JSON payload: want a JSON object such as {\"body\":\"hi\"}, got %s", payload)
	}
	if _, err := proto.RoomSubject(topic); err != nil {
		return invalidf("topic %q: %v", topic, err)
	}
	if err := (&proto.Broadcast{Event: event, Payload: payload}).Validate(); err != nil {
		return invalidf("%v", err)
	}
	c, err := connect(cfg)
	if err != nil {
		return err
	}
	defer c.close()
	ctx, cancel := c.context()
	defer cancel()
	if err := proto.Publish(ctx, c.nc, topic, event, json.RawMessage(payload)); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("the room stream did not confirm the publish to %s within %s (timeout)", topic, c.timeout)
		}
		return fmt.Errorf("publish to %s: %v", topic, err)
	}
	fmt.Fprintf(stdout, "published %s to %s\n", event, topic)
	return nil
}

func cmdToken(cfg config, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usagef("token: want USER, got %d argument(s)", len(args))
	}
	if err := proto.ValidUserID(args[0]); err != nil {
		return invalidf("user %q: %v", args[0], err)
	}
	c, err := connect(cfg)
	if err != nil {
		return err
	}
	defer c.close()
	var rep proto.SignReply
	if err := c.request("authsvc", proto.SubjectAuthSign, proto.SignRequest{UserID: args[0]}, &rep); err != nil {
		return err
	}
	if rep.Error != "" {
		return fmt.Errorf("authsvc refused: %s", rep.Error)
	}
	if rep.Token == "" {
		return fmt.Errorf("authsvc answered on %s without a token", proto.SubjectAuthSign)
	}
	fmt.Fprintln(stdout, rep.Token)
	return nil
}

func cmdDisconnect(cfg config, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usagef("disconnect: want USER, got %d argument(s)", len(args))
	}
	user := args[0]
	if err := proto.ValidUserID(user); err != nil {
		return invalidf("user %q: %v", user, err)
	}
	subject, data, err := proto.DisconnectMessage(user)
	if err != nil {
		return invalidf("user %q: %v", user, err)
	}
	c, err := connect(cfg)
	if err != nil {
		return err
	}
	defer c.close()
	// Not request/reply: gateways do not answer, so the flush (the server
	// has the message) is all there is to wait for.
	if err := c.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("publish on %s: %v", subject, err)
	}
	ctx, cancel := c.context()
	defer cancel()
	if err := c.nc.FlushWithContext(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("NATS did not confirm the publish on %s within %s (timeout)", subject, c.timeout)
		}
		return fmt.Errorf("flush after publish on %s: %v", subject, err)
	}
	fmt.Fprintf(stdout, "sent disconnect for %s on %s\n", user, subject)
	return nil
}

// cmdBan bans (cmd "ban") or unbans a user through authsvc, which keeps
// the ban and, on a ban, closes the user's sockets.
func cmdBan(cfg config, cmd string, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usagef("%s: want USER, got %d argument(s)", cmd, len(args))
	}
	user := args[0]
	if err := proto.ValidUserID(user); err != nil {
		return invalidf("user %q: %v", user, err)
	}
	subject := proto.SubjectAuthUnban
	req := proto.BanRequest{UserID: user}
	if cmd == "ban" {
		subject = proto.SubjectAuthBan
		req.Seconds = int64((cfg.BanFor + time.Second - 1) / time.Second)
	}
	c, err := connect(cfg)
	if err != nil {
		return err
	}
	defer c.close()
	var rep proto.BanReply
	if err := c.request("authsvc", subject, req, &rep); err != nil {
		return err
	}
	switch {
	case rep.Error != "":
		return fmt.Errorf("authsvc refused: %s", rep.Error)
	case cmd == "unban":
		fmt.Fprintf(stdout, "unbanned %s: tokens signed from %s on are accepted\n", user, rep.NotBefore)
	case rep.Forever:
		fmt.Fprintf(stdout, "banned %s until unban; sockets closed\n", user)
	default:
		fmt.Fprintf(stdout, "banned %s: tokens signed before %s are refused; sockets closed\n", user, rep.NotBefore)
	}
	return nil
}
