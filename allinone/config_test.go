package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "chat.yaml")
	yaml := "http:\n  addr: 127.0.0.1:5000\ngateway:\n  send_queue: 77\n  request_timeout: 2s\nrooms:\n  public: [\"rooms:bench*\"]\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHAT_GATEWAY_SEND_QUEUE", "88")
	t.Setenv("CHAT_ROOMS_MAX_BODY_BYTES", "99")
	cfg, _, err := loadConfig([]string{"--config", file, "--rooms-max-body-bytes", "100"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:5000" {
		t.Errorf("http.addr from file = %q", cfg.HTTPAddr)
	}
	if cfg.Gateway.SendQueueLen != 88 {
		t.Errorf("env must beat the file: send_queue = %d", cfg.Gateway.SendQueueLen)
	}
	if cfg.Rooms.MaxBodyBytes != 100 {
		t.Errorf("a flag must beat env: max_body_bytes = %d", cfg.Rooms.MaxBodyBytes)
	}
	if cfg.Gateway.RequestTimeout != 2*time.Second {
		t.Errorf("request_timeout = %v", cfg.Gateway.RequestTimeout)
	}
	if len(cfg.Rooms.PublicTopics) != 1 || cfg.Rooms.PublicTopics[0] != "rooms:bench*" {
		t.Errorf("rooms.public = %v", cfg.Rooms.PublicTopics)
	}
	if cfg.NATSPort != 4222 || cfg.TokenSalt != "user socket" || !cfg.Gateway.AllowAnonymous {
		t.Errorf("defaults lost: %+v", cfg)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--gateway-send-queue", "0"}, "gateway.send_queue must be positive"},
		{[]string{"--auth-secret-key-base", "short"}, "at least 32 are needed"},
		{[]string{"--log-format", "xml"}, "log.format"},
		{[]string{"--config", "/nonexistent/chat.yaml"}, "config file"},
		{[]string{"--no-such-flag"}, "unknown flag"},
		// make run's development login, on every interface: refused.
		{[]string{"--http-addr", "0.0.0.0:4000"}, "--gateway-dev-login-public"},
	} {
		_, _, err := loadConfig(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("loadConfig(%v) = %v, want an error about %q", tc.args, err, tc.want)
		}
	}
}
