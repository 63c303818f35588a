package gateway

import (
	"net/http"
	"os"
	"path/filepath"

	"github.com/phxnats/phxnats/gateway/web"
)

// PhoenixJSFile is the file served as /assets/phoenix.js, inside AssetsDir.
const PhoenixJSFile = "phoenix.min.js"

func (g *Gateway) handlePage(mux *http.ServeMux) {
	files := http.FileServerFS(web.Files)
	mux.Handle("GET /{$}", files)
	mux.Handle("GET /app.js", files)
	mux.Handle("GET /app.css", files)
	js := filepath.Join(g.opts.AssetsDir, PhoenixJSFile)
	if _, err := os.Stat(js); err != nil {
		g.log.Warn("phoenix.js not found: the chat page will not work until `make assets` installs it", "path", js)
	}
	mux.HandleFunc("GET /assets/phoenix.js", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(js); err != nil {
			http.Error(w, "phoenix.js is not installed: run `make assets` (npm install in gateway/web)", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeFile(w, r, js)
	})
}
