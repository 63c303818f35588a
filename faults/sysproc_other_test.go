//go:build !linux

package faults

import "syscall"

// sysProcAttr: only Linux can tie a child's life to its parent's; elsewhere
// t.Cleanup alone stops the processes.
func sysProcAttr() *syscall.SysProcAttr { return nil }
