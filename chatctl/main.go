// Command chatctl is the operator's and scripts' tool for a phxnats chat: it
// manages private-room memberships, posts into rooms, signs tokens and
// disconnects users, over the NATS contract of package proto.
//
//	chatctl rooms grant rooms:ops alice
//	chatctl rooms members rooms:ops --json
//	chatctl publish rooms:lobby new_msg '{"body":"deploy finished"}'
//	chatctl token alice
//	chatctl disconnect alice
//	chatctl ban alice --for 24h
//
// It imports only proto and nats.go (plus pflag and viper for its flags),
// never a service's internals: it sees the system exactly as any other NATS
// client does.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Exit statuses: 0 done; 1 something failed at run time (NATS, a service, a
// timeout), the request may or may not have taken effect only on a timeout;
// 2 the command line or the configuration was wrong and nothing was sent.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usageText = `Usage: chatctl [flags] COMMAND ARGS...

Operator tool for a phxnats chat; talks to roomsvc, authsvc and the gateways over NATS.

Commands:
  rooms grant TOPIC USER      make USER a member of the private room TOPIC
  rooms revoke TOPIC USER     remove USER from the room TOPIC
  rooms members TOPIC         list the members of TOPIC, one per line (--json: a JSON array)
  rooms who TOPIC             who is in TOPIC now (presence, every gateway): a user and their socket count per line (--json: Phoenix's presence state)
  publish TOPIC EVENT JSON    broadcast EVENT with the JSON object payload to every socket joined to TOPIC
                              (returns once the room stream stored it)
  token USER                  print a token for USER, signed by authsvc
  disconnect USER             close every socket of USER on every gateway (phoenix.js reconnects)
  ban USER [--for DURATION]   refuse every token of USER signed before the ban ends (until unban
                              without --for) and close USER's sockets: the reconnect is refused
  unban USER                  accept USER's tokens signed from now on (older ones stay refused)

Flags:
%s
Settings come from the flags, then the environment (CHAT_NATS_URL, CHAT_NATS_NKEY,
CHAT_TIMEOUT), then the --config YAML file (keys nats_url, nats_nkey, timeout), then
the defaults. Against make run, started in the same folder, no flag is needed:
its generated NATS key, data/nats.nk, is found there.
Exit status: 0 done, 1 failed (NATS, a service, a timeout), 2 bad command line or config.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// exitError carries an exit status other than exitFail.
type exitError struct {
	code      int
	showUsage bool
	err       error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usagef reports a malformed command line: exit 2, with the usage text.
func usagef(format string, args ...any) error {
	return &exitError{code: exitUsage, showUsage: true, err: fmt.Errorf(format, args...)}
}

// invalidf reports a well-formed command line with a bad value (a payload
// that is not JSON, an unreadable config file): exit 2, nothing was sent.
func invalidf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// run is the whole command: args without the program name, env the
// environment lookup (os.Getenv in main). It returns the exit status.
func run(args []string, stdout, stderr io.Writer, env func(string) string) int {
	cfg, rest, err := loadConfig(args, env)
	if errors.Is(err, errHelp) {
		fmt.Fprintf(stdout, usageText, flagUsages())
		return exitOK
	}
	if err == nil {
		err = dispatch(cfg, rest, stdout)
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "chatctl: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.showUsage {
			fmt.Fprintf(stderr, "\n"+usageText, flagUsages())
		}
		return ee.code
	}
	return exitFail
}

func dispatch(cfg config, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("missing command")
	}
	cmd, args := args[0], args[1:]
	if cfg.JSON && cmd != "rooms" {
		return usagef("--json is only for rooms members and rooms who")
	}
	if cfg.BanFor != 0 && cmd != "ban" {
		return usagef("--for is only for ban")
	}
	switch cmd {
	case "help":
		fmt.Fprintf(stdout, usageText, flagUsages())
		return nil
	case "rooms":
		return cmdRooms(cfg, args, stdout)
	case "publish":
		return cmdPublish(cfg, args, stdout)
	case "token":
		return cmdToken(cfg, args, stdout)
	case "disconnect":
		return cmdDisconnect(cfg, args, stdout)
	case "ban", "unban":
		return cmdBan(cfg, cmd, args, stdout)
	default:
		return usagef("unknown command %q", cmd)
	}
}
