// gopeer: a Go test peer for toki's interop tests and benchmarks.
//
// It speaks smux (xtaci/smux, Debian's 1.5.16) over a WebSocket carried exactly like
// Tokilake's ws_conn.go adapter (gorilla/websocket), and runs a simple stream test
// protocol (echo / sink with a verifiable byte pattern). See ../README.md.
//
// Build with ../build-gopeer.sh (GOPATH mode, offline, Debian golang-* packages).
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/xtaci/smux"
)

const subprotocol = "tokilake.v1"

var outMu sync.Mutex

// say prints one line to stdout (unbuffered in Go, so each line is flushed at once).
func say(format string, args ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func logf(format string, args ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stderr, "gopeer: "+format+"\n", args...)
}

// fail prints the RESULT fail line and exits 1.
func fail(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	msg = strings.ReplaceAll(msg, "\n", " ")
	outMu.Lock()
	fmt.Fprintf(os.Stdout, "RESULT fail %s\n", msg)
	fmt.Fprintf(os.Stderr, "gopeer: FAIL: %s\n", msg)
	os.Exit(1)
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: gopeer <command> [flags]

commands:
  server      WebSocket+smux server; runs the stream handler on every accepted stream
  client      dial a WebSocket+smux server, open N streams and run the opener role
  bench-pair  server and client in one process over loopback TCP/WebSocket (Go<->Go)
  tcp-pair    raw loopback TCP (no WebSocket, no smux), same stream protocol
  tokiame     an original-style Tokiame worker (register, heartbeats, proxies to --backend)
  tokilake    an original-style Tokilake hub (tunnel endpoint + tiny OpenAI-style HTTP API)

run 'gopeer <command> -h' for the flags of a command.
`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	switch cmd {
	case "server":
		cmdServer(args)
	case "client":
		cmdClient(args)
	case "bench-pair":
		cmdBenchPair(args)
	case "tcp-pair":
		cmdTCPPair(args)
	case "tokiame":
		cmdTokiame(args)
	case "tokilake":
		cmdTokilake(args)
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "gopeer: unknown command %q\n", cmd)
		usage()
	}
}

func parseMode(s string) byte {
	switch strings.ToLower(s) {
	case "echo", "e":
		return modeEcho
	case "sink", "s":
		return modeSink
	}
	fmt.Fprintf(os.Stderr, "gopeer: --mode must be echo or sink, got %q\n", s)
	os.Exit(2)
	return 0
}

func modeName(m byte) string {
	if m == modeSink {
		return "sink"
	}
	return "echo"
}

func checkVersion(v int) {
	if v != 1 && v != 2 {
		fmt.Fprintf(os.Stderr, "gopeer: --smux-version must be 1 or 2, got %d\n", v)
		os.Exit(2)
	}
}

func checkCounts(streams int, bytes int64) {
	if streams < 0 || bytes < 0 {
		fmt.Fprintln(os.Stderr, "gopeer: --streams/--open and --bytes must be >= 0")
		os.Exit(2)
	}
}

// armTimeout makes the process print "RESULT fail timeout" and exit 1 after sec seconds.
func armTimeout(sec float64) {
	if sec <= 0 {
		return
	}
	time.AfterFunc(time.Duration(sec*float64(time.Second)), func() {
		fail("timeout after %gs", sec)
	})
	if d := time.Duration(sec * float64(time.Second)); d < eofWait {
		eofWait = d
	}
}

func smuxConfig(version int) *smux.Config {
	cfg := smux.DefaultConfig()
	cfg.KeepAliveDisabled = true
	cfg.Version = version
	if err := smux.VerifyConfig(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "gopeer: smux config: %v\n", err)
		os.Exit(2)
	}
	return cfg
}

func mbps(totalBytes float64, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return totalBytes * 8 / seconds / 1e6
}

// openAndRun opens n streams concurrently (open fn) and runs the opener role on each.
func openAndRun(n int, length uint64, mode byte, open func() (testStream, error)) (time.Duration, error) {
	start := time.Now()
	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := func() error {
				s, err := open()
				if err != nil {
					return fmt.Errorf("open stream: %w", err)
				}
				return runOpener(s, mode, length)
			}()
			if err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("stream #%d: %w", i, err)
				}
				errMu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	return time.Since(start), firstErr
}

// ---------------------------------------------------------------------------------------
// server

type serverOpts struct {
	version  int
	path     string
	token    string
	open     int
	bytes    int64
	mode     byte
	sessions int64
	quiet    bool
}

func (o *serverOpts) handler() http.Handler {
	upgrader := websocket.Upgrader{
		Subprotocols: []string{subprotocol},
		CheckOrigin:  func(*http.Request) bool { return true },
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.path != "" && r.URL.Path != o.path {
			http.NotFound(w, r)
			return
		}
		if o.token != "" {
			tok := r.Header.Get("Authorization")
			if len(tok) >= 7 && strings.EqualFold(tok[:7], "bearer ") {
				tok = tok[7:]
			}
			if tok == "" {
				tok = r.URL.Query().Get("access_token")
			}
			if tok == "" {
				tok = r.URL.Query().Get("token")
			}
			tok = strings.TrimSpace(strings.TrimPrefix(tok, "sk-"))
			if tok != strings.TrimPrefix(o.token, "sk-") {
				http.Error(w, `{"error":"invalid token"}`, http.StatusUnauthorized)
				return
			}
		}
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			logf("upgrade: %v", err)
			return
		}
		o.serveSession(ws)
	})
}

func (o *serverOpts) serveSession(ws *websocket.Conn) {
	id := atomic.AddInt64(&o.sessions, 1)
	conn := newWSStreamConn(ws)
	sess, err := smux.Server(conn, smuxConfig(o.version))
	if err != nil {
		logf("session %d: smux.Server: %v", id, err)
		ws.Close()
		return
	}
	defer sess.Close()
	if !o.quiet {
		say("SESSION-OPEN id=%d remote=%s subprotocol=%q", id, ws.RemoteAddr(), ws.Subprotocol())
	}

	openerDone := make(chan struct{})
	if o.open <= 0 {
		close(openerDone)
	} else {
		go func() {
			defer close(openerDone)
			d, err := openAndRun(o.open, uint64(o.bytes), o.mode, func() (testStream, error) {
				return sess.OpenStream()
			})
			if err != nil {
				say("OPENED-FAIL %s", strings.ReplaceAll(err.Error(), "\n", " "))
				return
			}
			total := float64(o.open) * float64(o.bytes)
			say("OPENED-OK n=%d bytes=%d mode=%s seconds=%.6f mbps=%.1f", o.open, o.bytes,
				modeName(o.mode), d.Seconds(), mbps(total, d.Seconds()))
		}()
	}

	var wg sync.WaitGroup
	var handled, failed int64
	var endErr error
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			endErr = err
			break
		}
		wg.Add(1)
		go func(st *smux.Stream) {
			defer wg.Done()
			res := runHandler(st)
			atomic.AddInt64(&handled, 1)
			if res.err != nil {
				atomic.AddInt64(&failed, 1)
				say("HANDLER-FAIL session=%d stream=%d mode=%c bytes=%d %s", id, st.ID(),
					printable(res.mode), res.length, res.err)
			}
		}(st)
	}
	// The transport has ended: let our openers finish (they fail fast now) before closing.
	select {
	case <-openerDone:
	case <-time.After(5 * time.Second):
	}
	sess.Close()
	wg.Wait()
	if !o.quiet {
		say("SESSION-CLOSED id=%d handled=%d failed=%d end=%q", id, handled, failed, endErr.Error())
	}
}

func printable(b byte) byte {
	if b < 0x20 || b > 0x7e {
		return '?'
	}
	return b
}

func cmdServer(args []string) {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	version := fs.Int("smux-version", 1, "smux protocol version (1 or 2)")
	open := fs.Int("open", 0, "per session, open N streams toward the client and run the opener role")
	nbytes := fs.Int64("bytes", 0, "payload bytes per stream for --open")
	mode := fs.String("mode", "echo", "mode for --open streams: echo or sink")
	path := fs.String("path", "/api/tokilake/connect", "WebSocket path; empty = accept any path")
	token := fs.String("token", "", "if set, require this token (Authorization: Bearer, access_token or token query); else no auth")
	timeout := fs.Float64("timeout", 0, "exit 1 with 'RESULT fail timeout' after this many seconds (0 = run until killed)")
	quiet := fs.Bool("quiet", false, "do not print SESSION-OPEN / SESSION-CLOSED lines")
	stdinEOF := fs.Bool("exit-on-stdin-eof", false, "exit 0 when stdin is closed (ties the server's life to its parent)")
	fs.Parse(args)
	checkVersion(*version)
	checkCounts(*open, *nbytes)
	o := &serverOpts{version: *version, path: *path, token: *token, open: *open,
		bytes: *nbytes, mode: parseMode(*mode), quiet: *quiet}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; os.Exit(0) }()
	if *stdinEOF {
		go func() {
			buf := make([]byte, 256)
			for {
				if _, err := os.Stdin.Read(buf); err != nil {
					os.Exit(0)
				}
			}
		}()
	}
	armTimeout(*timeout)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gopeer: listen %s: %v\n", *listen, err)
		os.Exit(1)
	}
	say("LISTEN %s", ln.Addr().String())
	srv := &http.Server{Handler: o.handler()}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintf(os.Stderr, "gopeer: serve: %v\n", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------------------------------
// client

type clientOpts struct {
	url            string
	version        int
	streams        int
	bytes          int64
	mode           byte
	accept         bool
	expectAccepted int
	token          string
}

type clientResult struct {
	dur      time.Duration
	accepted int64
}

func runClient(o clientOpts) (clientResult, error) {
	var res clientResult
	u, err := url.Parse(o.url)
	if err != nil {
		return res, fmt.Errorf("bad --url: %v", err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	hdr := http.Header{}
	if o.token != "" {
		hdr.Set("Authorization", "Bearer "+o.token)
	}
	dialer := websocket.Dialer{Subprotocols: []string{subprotocol}, HandshakeTimeout: 30 * time.Second}
	ws, resp, err := dialer.Dial(u.String(), hdr)
	if err != nil {
		if resp != nil {
			return res, fmt.Errorf("dial %s: %v (HTTP %s)", u, err, resp.Status)
		}
		return res, fmt.Errorf("dial %s: %v", u, err)
	}
	if ws.Subprotocol() != subprotocol {
		logf("note: server did not select subprotocol %s (got %q)", subprotocol, ws.Subprotocol())
	}
	sess, err := smux.Client(newWSStreamConn(ws), smuxConfig(o.version))
	if err != nil {
		ws.Close()
		return res, fmt.Errorf("smux.Client: %v", err)
	}
	defer sess.Close()

	// sessDead is closed once the session's transport has failed/ended (AcceptStream errors).
	sessDead := make(chan struct{})
	acceptDone := make(chan error, 1)
	if !o.accept {
		go func() {
			defer close(sessDead)
			for {
				st, err := sess.AcceptStream()
				if err != nil {
					return
				}
				logf("closing unexpected stream %d opened by the server (no --accept)", st.ID())
				st.Close()
			}
		}()
	} else {
		go func() {
			defer close(sessDead)
			var wg sync.WaitGroup
			var firstErr error
			var mu sync.Mutex
			var finished int64
			doneOnce := sync.Once{}
			signalDone := func(err error) { doneOnce.Do(func() { acceptDone <- err }) }
			if o.expectAccepted <= 0 {
				signalDone(nil)
			}
			for {
				st, err := sess.AcceptStream()
				if err != nil {
					mu.Lock()
					e := firstErr
					mu.Unlock()
					if e == nil {
						e = fmt.Errorf("accept: %v (after %d accepted streams finished, expected %d)",
							err, atomic.LoadInt64(&finished), o.expectAccepted)
					}
					signalDone(e)
					return
				}
				wg.Add(1)
				go func(st *smux.Stream) {
					defer wg.Done()
					r := runHandler(st)
					if r.err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = fmt.Errorf("accepted stream %d (mode=%c bytes=%d): %w",
								st.ID(), printable(r.mode), r.length, r.err)
						}
						e := firstErr
						mu.Unlock()
						signalDone(e)
						return
					}
					if n := atomic.AddInt64(&finished, 1); n == int64(o.expectAccepted) {
						signalDone(nil)
					}
				}(st)
			}
		}()
	}

	d, err := openAndRun(o.streams, uint64(o.bytes), o.mode, func() (testStream, error) {
		return sess.OpenStream()
	})
	res.dur = d
	if err != nil {
		return res, err
	}
	if o.accept {
		if err := <-acceptDone; err != nil {
			return res, err
		}
		res.accepted = int64(o.expectAccepted)
		// Give the server's openers a moment to read our handlers' FINs before the
		// connection goes away (in smux 1.5.16 a reader that sees FIN and a transport
		// error at the same time may get either).
		time.Sleep(100 * time.Millisecond)
	}
	gracefulEnd(ws, sessDead)
	return res, nil
}

// gracefulEnd half-closes the TCP connection (so everything we sent is delivered and no
// RST is provoked by unread data) and waits up to 5 s for the server to close its side.
func gracefulEnd(ws *websocket.Conn, sessDead <-chan struct{}) {
	if cw, ok := ws.UnderlyingConn().(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err == nil {
			select {
			case <-sessDead:
			case <-time.After(5 * time.Second):
				logf("note: server did not close the connection within 5s after our half-close")
			}
		}
	}
}

func cmdClient(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	u := fs.String("url", "", "ws://host:port/path of the server (http:// is rewritten to ws://)")
	version := fs.Int("smux-version", 1, "smux protocol version (1 or 2)")
	streams := fs.Int("streams", 1, "number of concurrent streams to open")
	nbytes := fs.Int64("bytes", 1<<20, "payload bytes per stream")
	mode := fs.String("mode", "echo", "echo or sink")
	accept := fs.Bool("accept", false, "also accept streams opened by the server and run the handler on them")
	expect := fs.Int("expect-accepted", 0, "with --accept: wait until this many accepted streams finished")
	token := fs.String("token", "test", "sent as 'Authorization: Bearer <token>' (empty = no header)")
	timeout := fs.Float64("timeout", 120, "print 'RESULT fail timeout' and exit 1 after this many seconds (0 = none)")
	fs.Parse(args)
	if *u == "" {
		fmt.Fprintln(os.Stderr, "gopeer client: --url is required")
		os.Exit(2)
	}
	checkVersion(*version)
	checkCounts(*streams, *nbytes)
	armTimeout(*timeout)
	o := clientOpts{url: *u, version: *version, streams: *streams, bytes: *nbytes,
		mode: parseMode(*mode), accept: *accept, expectAccepted: *expect, token: *token}
	res, err := runClient(o)
	if err != nil {
		fail("%v", err)
	}
	printResult(o.streams, o.bytes, res.dur, o.accept, res.accepted)
}

func printResult(streams int, nbytes int64, d time.Duration, accept bool, accepted int64) {
	total := float64(streams) * float64(nbytes)
	line := fmt.Sprintf("RESULT ok streams=%d bytes=%d seconds=%.6f mbps=%.1f", streams, nbytes,
		d.Seconds(), mbps(total, d.Seconds()))
	if accept {
		line += fmt.Sprintf(" accepted=%d", accepted)
	}
	say("%s", line)
}

// ---------------------------------------------------------------------------------------
// bench-pair: Go server + Go client in one process over loopback TCP + WebSocket.

func cmdBenchPair(args []string) {
	fs := flag.NewFlagSet("bench-pair", flag.ExitOnError)
	version := fs.Int("smux-version", 1, "smux protocol version (1 or 2)")
	streams := fs.Int("streams", 1, "number of concurrent streams")
	nbytes := fs.Int64("bytes", 64<<20, "payload bytes per stream")
	mode := fs.String("mode", "sink", "echo or sink")
	timeout := fs.Float64("timeout", 120, "print 'RESULT fail timeout' and exit 1 after this many seconds (0 = none)")
	fs.Parse(args)
	checkVersion(*version)
	checkCounts(*streams, *nbytes)
	armTimeout(*timeout)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	so := &serverOpts{version: *version, path: "/api/tokilake/connect", mode: modeEcho, quiet: true}
	go http.Serve(ln, so.handler())
	o := clientOpts{url: "ws://" + ln.Addr().String() + "/api/tokilake/connect", version: *version,
		streams: *streams, bytes: *nbytes, mode: parseMode(*mode), token: "test"}
	res, err := runClient(o)
	if err != nil {
		fail("%v", err)
	}
	printResult(o.streams, o.bytes, res.dur, false, 0)
}

// ---------------------------------------------------------------------------------------
// tcp-pair: raw loopback TCP, one connection per "stream".

func cmdTCPPair(args []string) {
	fs := flag.NewFlagSet("tcp-pair", flag.ExitOnError)
	streams := fs.Int("streams", 1, "number of concurrent TCP connections")
	nbytes := fs.Int64("bytes", 64<<20, "payload bytes per connection")
	mode := fs.String("mode", "sink", "echo or sink")
	timeout := fs.Float64("timeout", 120, "print 'RESULT fail timeout' and exit 1 after this many seconds (0 = none)")
	fs.Parse(args)
	checkCounts(*streams, *nbytes)
	armTimeout(*timeout)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	handlerErr := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				if r := runHandler(c.(*net.TCPConn)); r.err != nil {
					select {
					case handlerErr <- r.err:
					default:
					}
				}
			}(c)
		}
	}()
	addr := ln.Addr().String()
	d, err := openAndRun(*streams, uint64(*nbytes), parseMode(*mode), func() (testStream, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	})
	if err != nil {
		select {
		case herr := <-handlerErr:
			fail("%v (handler: %v)", err, herr)
		default:
		}
		fail("%v", err)
	}
	printResult(*streams, *nbytes, d, false, 0)
}
