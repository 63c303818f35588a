// Package web holds the chat page. Its one third-party file, phoenix.js, is
// installed from npm into this folder's node_modules by `make assets` and is
// never committed.
package web

import "embed"

// Files are the page's own files: index.html, app.js and app.css.
//
//go:embed index.html app.js app.css
var Files embed.FS
