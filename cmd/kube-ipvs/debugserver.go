package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/kube-ipvs/kube-ipvs/inspect"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// The debug socket: the running agent answers `kube-ipvs show` and
// `kube-ipvs explain` over HTTP on a unix socket, readable by root only.
//
//	GET /v1/show                                  inspect.Show as JSON
//	GET /v1/explain?target=ADDR:PORT[/PROTO][&from=ADDR]  inspect.Explanation as JSON
//
// A bad request is answered 400 with {"error": "..."}.

// DefaultDebugSocket is where the agent serves show and explain unless
// --debug-socket says otherwise.
const DefaultDebugSocket = "/run/kube-ipvs/kube-ipvs.sock"

// debugSocket is the agent's --debug-socket; "" serves none.
var debugSocket = DefaultDebugSocket

// serveDebug serves show and explain on the unix socket path until ctx is
// done, then removes the socket. The socket is made mode 0600 before it
// takes its name, so no one but root can connect even for a moment; a
// stale socket file left by a killed agent is replaced, while a socket
// another running agent answers on is left alone (an error). It returns
// once it stopped serving; an error only when it could not listen (the
// caller logs it: the data plane does not depend on this).
func serveDebug(ctx context.Context, log *zap.Logger, path string, p *proxier.Proxier) error {
	l, made, err := listenUnix(path)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: debugHandler(p), ReadHeaderTimeout: 5 * time.Second, ErrorLog: zap.NewStdLog(log)}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	log.Info("serving show and explain", zap.String("socket", path))
	select {
	case <-ctx.Done():
	case err = <-done: // Serve ended by itself: its listener broke
		log.Error("the debug socket stopped serving", zap.String("socket", path), zap.Error(err))
	}
	shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	l.Close()
	removeSocket(path, made)
	return nil
}

// listenUnix listens on a unix socket at path, mode 0600, creating its
// directory (0700) if need be; it returns the socket file as it made it.
func listenUnix(path string) (*net.UnixListener, fs.FileInfo, error) {
	fail := func(err error) (*net.UnixListener, fs.FileInfo, error) {
		return nil, nil, fmt.Errorf("debug socket: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fail(err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return fail(fmt.Errorf("%s exists and is not a socket", path))
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return fail(fmt.Errorf("%s is served by another process (another kube-ipvs?)", path))
		}
	}
	// Listen on a private name, restrict it, then rename it over path:
	// the socket never has its name without its mode, and a stale one is
	// replaced in one step.
	tmp := path + ".new-" + strconv.Itoa(os.Getpid())
	_ = os.Remove(tmp)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return fail(err)
	}
	l.SetUnlinkOnClose(false) // the name changes; removeSocket removes it
	var made fs.FileInfo
	err = os.Chmod(tmp, 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		made, err = os.Lstat(path)
	}
	if err != nil {
		l.Close()
		_ = os.Remove(tmp)
		return fail(err)
	}
	return l, made, nil
}

// removeSocket removes the socket file made, unless path is no longer it
// (another agent took the name since).
func removeSocket(path string, made fs.FileInfo) {
	if now, err := os.Lstat(path); err == nil && os.SameFile(now, made) {
		_ = os.Remove(path)
	}
}

// debugHandler answers /v1/show and /v1/explain from p's view, and Go's
// profiles under /debug/pprof/, as kube-proxy's enableProfiling does on its
// metrics port, here only to root on the node (`curl --unix-socket
// /run/kube-ipvs/kube-ipvs.sock http://kube-ipvs/debug/pprof/heap`).
func debugHandler(p *proxier.Proxier) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /v1/show", func(w http.ResponseWriter, _ *http.Request) {
		writeDebugJSON(w, http.StatusOK, inspect.NewShow(p.View()))
	})
	mux.HandleFunc("GET /v1/explain", func(w http.ResponseWriter, r *http.Request) {
		dst, proto, err := inspect.ParseTarget(r.URL.Query().Get("target"))
		if err != nil {
			writeDebugJSON(w, http.StatusBadRequest, debugError{Error: err.Error()})
			return
		}
		var from netip.Addr
		if s := r.URL.Query().Get("from"); s != "" {
			if from, err = netip.ParseAddr(s); err != nil {
				writeDebugJSON(w, http.StatusBadRequest, debugError{Error: "from: " + err.Error()})
				return
			}
		}
		writeDebugJSON(w, http.StatusOK, inspect.Explain(p.View(), dst, proto, from))
	})
	return mux
}

// debugError is the body of a 400.
type debugError struct {
	Error string `json:"error"`
}

func writeDebugJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// errNoAgent says no agent answers on the socket.
var errNoAgent = errors.New("no kube-ipvs agent answers")
