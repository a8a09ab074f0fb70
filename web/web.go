// Package web is mamori's console: a small single-page application (plain
// JavaScript and CSS, no build step, no third-party code) embedded into the
// binary, and the handler that serves it behind the API's own token.
//
// The browser never holds the token in script-reachable storage: POST
// /console/login checks the token against the API and sets it in an
// HttpOnly, SameSite=Strict cookie; the page then calls the API through
// /console/api/..., where this handler turns the cookie back into the
// API's Authorization header. Every state-changing or data-returning
// console request must carry the X-Mamori-Console header and come from the
// same origin, so another site can neither read nor forge them (CSRF). A
// strict Content-Security-Policy allows only this origin's scripts, and
// the scripts only ever put runtime strings into the page as text.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// CSP is the Content-Security-Policy of every console response: scripts,
// styles and fetches from this origin only, no inline script or style, no
// framing, no plugins, no forms posting elsewhere.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Options configure the console handler.
type Options struct {
	// API is the HTTP API handler; console calls to /console/api/X reach it
	// as /api/X with the session's token as "Authorization: Bearer".
	API http.Handler
	// CheckPath is the API request a session is checked with
	// [/api/v1/findings?limit=1]: it is alive when the API answers it 200.
	CheckPath string
	// SessionPath is where sessions are opened (POST) and closed (DELETE
	// SessionPath/current) [/api/v1/sessions].
	SessionPath string
	Logger      *slog.Logger
}

// Handler serves the console: the page and its assets at / and /assets/,
// the login at /console/login, and the API proxy at /console/api/.
type Handler struct {
	opt   Options
	files map[string]asset
	// version names this build's asset set; the page refers to its assets
	// under /assets/v-VERSION/, which are cached as immutable.
	version string
	index   asset
	types   []byte // the /console/types document
	mux     *http.ServeMux
}

type asset struct {
	body  []byte
	gz    []byte // gzip of body, nil when it does not pay
	ctype string
	etag  string
}

// New returns the console handler.
func New(opt Options) (*Handler, error) {
	if opt.API == nil {
		return nil, fmt.Errorf("web: no API handler")
	}
	if opt.CheckPath == "" {
		opt.CheckPath = "/api/v1/findings?limit=1"
	}
	if opt.SessionPath == "" {
		opt.SessionPath = "/api/v1/sessions"
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	h := &Handler{opt: opt, files: map[string]asset{}, mux: http.NewServeMux()}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		h.files["/"+p] = asset{body: b, gz: gzipped(b), ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web: read embedded assets: %w", err)
	}
	names := slices.Sorted(maps.Keys(h.files))
	sum := sha256.New()
	for _, n := range names {
		sum.Write([]byte(n + h.files[n].etag))
	}
	h.version = hex.EncodeToString(sum.Sum(nil)[:6])
	idx := h.files["/assets/index.html"]
	page := bytes.ReplaceAll(idx.body, []byte(`"/assets/`), []byte(`"/assets/v-`+h.version+`/`))
	h.index = asset{body: page, gz: gzipped(page), ctype: idx.ctype, etag: `"` + h.version + `"`}
	if h.types, err = typesJSON(); err != nil {
		return nil, err
	}
	h.mux.HandleFunc("GET /{$}", h.serveIndex)
	h.mux.HandleFunc("GET /assets/", h.serveAsset)
	h.mux.HandleFunc("POST /console/login", h.login)
	h.mux.HandleFunc("POST /console/logout", h.logout)
	h.mux.HandleFunc("GET /console/session", h.session)
	h.mux.HandleFunc("GET /console/types", h.serveTypes)
	h.mux.HandleFunc("/console/api/", h.proxy)
	return h, nil
}

// ServeHTTP sets the security headers every response carries and routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) serveIndex(w http.ResponseWriter, r *http.Request) {
	h.serveFile(w, r, h.index, "no-cache")
}

// serveAsset serves /assets/v-VERSION/NAME as immutable (the version
// changes with any asset, so a new binary's page asks for new URLs), and
// /assets/NAME, or another build's version, revalidated on every use.
func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request) {
	name, cache := r.URL.Path, "no-cache"
	if rest, ok := strings.CutPrefix(name, "/assets/v-"); ok {
		ver, file, _ := strings.Cut(rest, "/")
		name = "/assets/" + file
		if ver == h.version {
			cache = "public, max-age=31536000, immutable"
		}
	}
	a, ok := h.files[name]
	if !ok || name == "/assets/index.html" {
		http.NotFound(w, r)
		return
	}
	h.serveFile(w, r, a, cache)
}

func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, a asset, cache string) {
	hd := w.Header()
	hd.Set("Content-Type", a.ctype)
	hd.Set("Cache-Control", cache)
	hd.Set("Vary", "Accept-Encoding")
	body, etag := a.body, a.etag
	if a.gz != nil && r.Header.Get("Range") == "" && acceptsGzip(r) {
		body, etag = a.gz, strings.TrimSuffix(a.etag, `"`)+`-gz"`
		hd.Set("Content-Encoding", "gzip")
	}
	hd.Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// gzipped compresses an asset once, at start; nil when it saves little.
func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	if buf.Len() > len(b)*9/10 {
		return nil
	}
	return buf.Bytes()
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(q, " ", "") != "q=0" {
			return true
		}
	}
	return false
}
