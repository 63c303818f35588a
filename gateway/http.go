package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/phxnats/phxnats/gateway/web"
	"github.com/phxnats/phxnats/proto"
)

// PhoenixJSFile is the file served as /assets/phoenix.js, inside AssetsDir.
const PhoenixJSFile = "phoenix.min.js"

func (g *Gateway) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if !g.opts.Conn.IsConnected() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"status":"nats disconnected"}`+"\n")
		return
	}
	fmt.Fprintf(w, `{"status":"ok","rooms":%d}`+"\n", g.hub.Rooms())
}

func (g *Gateway) serveReady(w http.ResponseWriter, r *http.Request) {
	switch {
	case g.reg.Draining():
		httpJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
	case !g.opts.Conn.IsConnected():
		httpJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "nats disconnected"})
	default:
		httpJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// serveToken is the development login: it signs a token for any user_id.
func (g *Gateway) serveToken(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user_id")
	if err := validUserID(user); err != nil {
		httpJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	data, _ := json.Marshal(proto.SignRequest{UserID: user})
	msg, err := g.opts.Conn.Request(proto.SubjectAuthSign, data, g.opts.RequestTimeout)
	if err != nil {
		httpJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "authsvc unavailable: " + err.Error()})
		return
	}
	var rep proto.SignReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil || rep.Error != "" || rep.Token == "" {
		httpJSON(w, http.StatusBadGateway, map[string]string{"error": "authsvc refused: " + rep.Error})
		return
	}
	httpJSON(w, http.StatusOK, map[string]string{"token": rep.Token})
}

func validUserID(u string) error {
	if u == "" || len(u) > 64 {
		return errors.New("user_id must be 1 to 64 characters")
	}
	for _, c := range u {
		if c < 0x20 || c == 0x7f {
			return errors.New("user_id must not hold control characters")
		}
	}
	return nil
}

func httpJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// handlePage serves the chat page and phoenix.js from AssetsDir.
func (g *Gateway) handlePage(mux *http.ServeMux) {
	files := g.knownHost(http.FileServerFS(web.Files))
	mux.Handle("GET /{$}", files)
	mux.Handle("GET /app.js", files)
	mux.Handle("GET /app.css", files)
	js := filepath.Join(g.opts.AssetsDir, PhoenixJSFile)
	if _, err := os.Stat(js); err != nil {
		g.log.Warn("phoenix.js not found: the chat page will not work until `make assets` installs it", "path", js)
	}
	mux.Handle("GET /assets/phoenix.js", g.knownHost(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(js); err != nil {
			http.Error(w, "phoenix.js is not installed: run `make assets` (npm install in gateway/web)", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeFile(w, r, js)
	})))
}
