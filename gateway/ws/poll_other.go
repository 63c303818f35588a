//go:build !linux

package ws

import "syscall"

// pollReads has no effect here: without epoll every socket has a reader
// goroutine.
var pollReads = false

// pollState is empty: no socket is polled here.
type pollState struct{}

// newPollState returns nil: every socket gets a reader goroutine.
func newPollState(syscall.RawConn) *pollState { return nil }

// startPolling reports false: every socket gets a reader goroutine.
func (c *wsConn) startPolling() bool { return false }

// shutdownFD is never called: closeConn calls it for polled sockets only.
func shutdownFD(uintptr) {}
