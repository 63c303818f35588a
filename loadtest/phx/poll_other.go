//go:build !linux

package phx

import (
	"errors"
	"net"
	"time"
)

// errNoPoller: the poller is built on epoll.
var errNoPoller = errors.New("phx: the socket poller needs Linux (epoll); run without --readers")

// Poller is Linux-only; elsewhere NewPoller fails and every socket is read
// by a goroutine of its own.
type Poller struct{}

type pollWorker struct{}

// NewPoller fails: the poller needs Linux.
func NewPoller(int, time.Duration, func(int)) (*Poller, error) { return nil, errNoPoller }

// Workers returns 0.
func (p *Poller) Workers() int { return 0 }

// Close does nothing.
func (p *Poller) Close() {}

func (p *Poller) adopt(*Conn, net.Conn) error { return errNoPoller }

func (w *pollWorker) release(*Conn) {}

func (c *Conn) writeRaw([]byte) error { return errNoPoller }
