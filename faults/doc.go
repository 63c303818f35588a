// Package faults holds the fault tests of phxnats: black-box tests that run
// the real binaries (nats-server, gateway, roomsvc, authsvc, chatctl and the
// one-process chat) as separate processes on free loopback ports, break
// something (SIGKILL a NATS node or a roomsvc, SIGTERM a gateway under
// phoenix.js clients, restart the one-process default, cut a phoenix.js
// client's connection or a gateway's NATS connection with a loopback TCP
// proxy while clients resume from room history) and measure how the chat
// recovers and whether any acknowledged message is lost.
//
// The tests build the binaries themselves (one go build into a temporary
// folder, on first use; FAULTS_BIN=dir uses prebuilt ones instead), so
// `go test ./...` in this folder is all it takes; the phoenix.js test needs
// `make e2e-deps`.
// Run them with `make faults` (verbose: every measurement is printed) or as
// part of `make test`. They touch nothing but the processes they start and
// their temporary folders, so they run beside `make run` or `make cluster`.
//
// The package has no code outside its tests.
package faults
