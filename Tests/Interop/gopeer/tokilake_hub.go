package main

// `gopeer tokilake`: a hub that behaves like the original standalone Go Tokilake demo
// (cmd/tokilake + tokilake-core: gateway.go, session_manager.go, roundtrip.go) over the
// WebSocket transport, plus a tiny OpenAI-style HTTP API that relays through the tunnel.
// See ../README.md and /work/shared/spec/tunnel-protocol.md sections 2-6 and 9.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/xtaci/smux"
)

const (
	hubRegisterTimeout  = 30 * time.Second
	hubHeartbeatTimeout = 45 * time.Second
)

type hubSession struct {
	id   int64
	sess *smux.Session
	ctrl *lineWriter

	mu        sync.Mutex
	namespace string
	workerID  int
	channelID int
	group     string
	models    []string
	inflight  map[string]context.CancelFunc
}

func (s *hubSession) registered() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workerID != 0
}

func (s *hubSession) serves(model string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.workerID == 0 {
		return false
	}
	for _, m := range s.models {
		if m == model {
			return true
		}
	}
	return false
}

type tokilakeHub struct {
	token string

	mu          sync.Mutex
	nextSession int64
	byNamespace map[string]*hubSession
	ids         map[string][2]int // namespace -> (worker_id, channel_id), stable across reconnects
	nextWorker  int
}

func cmdTokilake(args []string) {
	fs := flag.NewFlagSet("tokilake", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "tunnel (WebSocket) listen address")
	apiListen := fs.String("api-listen", "127.0.0.1:0", "OpenAI-style HTTP API listen address")
	token := fs.String("token", "", "the only accepted token (required; a leading sk- is ignored)")
	timeout := fs.Float64("timeout", 0, "exit 1 with 'RESULT fail timeout' after this many seconds (0 = run until killed)")
	fs.Parse(args)
	tok := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(*token), "sk-"))
	if tok == "" {
		fmt.Fprintln(os.Stderr, "gopeer tokilake: --token is required")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; os.Exit(0) }()
	armTimeout(*timeout)

	h := &tokilakeHub{token: tok, byNamespace: map[string]*hubSession{}, ids: map[string][2]int{}}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gopeer tokilake: listen %s: %v\n", *listen, err)
		os.Exit(1)
	}
	aln, err := net.Listen("tcp", *apiListen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gopeer tokilake: listen %s: %v\n", *apiListen, err)
		os.Exit(1)
	}
	say("LISTEN %s", ln.Addr().String())
	say("API %s", aln.Addr().String())

	tmux := http.NewServeMux()
	tmux.HandleFunc("/api/tokilake/connect", h.serveConnect)
	tmux.HandleFunc("/connect", h.serveConnect)
	amux := http.NewServeMux()
	amux.HandleFunc("/v1/models", h.serveModels)
	for path := range apiRouteKinds {
		amux.HandleFunc(path, h.serveRelay)
	}
	go func() {
		if err := (&http.Server{Handler: amux}).Serve(aln); err != nil {
			fmt.Fprintf(os.Stderr, "gopeer tokilake: api serve: %v\n", err)
			os.Exit(1)
		}
	}()
	if err := (&http.Server{Handler: tmux}).Serve(ln); err != nil {
		fmt.Fprintf(os.Stderr, "gopeer tokilake: serve: %v\n", err)
		os.Exit(1)
	}
}

// extractToken mirrors gateway.go:45-72.
func extractToken(r *http.Request) string {
	tok := strings.TrimSpace(r.Header.Get("Authorization"))
	if len(tok) >= 7 && strings.EqualFold(tok[:7], "bearer ") {
		tok = strings.TrimSpace(tok[7:])
	}
	if tok == "" {
		tok = strings.TrimSpace(r.URL.Query().Get("access_token"))
	}
	if tok == "" {
		tok = strings.TrimSpace(r.URL.Query().Get("token"))
	}
	return strings.TrimSpace(strings.TrimPrefix(tok, "sk-"))
}

func (h *tokilakeHub) serveConnect(w http.ResponseWriter, r *http.Request) {
	tok := extractToken(r)
	var authErr string
	switch {
	case tok == "":
		authErr = "missing authorization token"
	case tok != h.token:
		authErr = "invalid token"
	}
	if authErr != "" {
		b, _ := json.Marshal(map[string]string{"error": authErr})
		http.Error(w, string(b), http.StatusUnauthorized)
		return
	}
	upgrader := websocket.Upgrader{
		Subprotocols: []string{subprotocol},
		CheckOrigin:  func(*http.Request) bool { return true },
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		logf("tokilake: upgrade: %v", err)
		return
	}
	h.serveSession(ws)
}

func (h *tokilakeHub) serveSession(ws *websocket.Conn) {
	sess, err := smux.Server(newWSStreamConn(ws), smuxConfig(1))
	if err != nil {
		logf("tokilake: smux server: %v", err)
		ws.Close()
		return
	}
	h.mu.Lock()
	h.nextSession++
	hs := &hubSession{id: h.nextSession, sess: sess, inflight: map[string]context.CancelFunc{}}
	h.mu.Unlock()
	defer func() {
		h.release(hs)
		sess.Close()
	}()

	sess.SetDeadline(time.Now().Add(hubRegisterTimeout))
	ctrl, err := sess.AcceptStream()
	if err != nil {
		logf("tokilake: session %d: accept control stream: %v", hs.id, err)
		return
	}
	sess.SetDeadline(time.Time{})
	defer ctrl.Close()
	hs.ctrl = &lineWriter{w: ctrl}
	end := h.controlLoop(hs, ctrl)
	hs.mu.Lock()
	ns := hs.namespace
	hs.mu.Unlock()
	if ns != "" {
		say("WORKER-GONE ns=%s reason=%s", ns, oneLine(end))
	}
	logf("tokilake: session %d ended: %s", hs.id, end)
}

// release removes the session from the namespace map (only if it still points at it) and
// cancels all its in-flight requests (session_manager.go:114-129, 173-186).
func (h *tokilakeHub) release(hs *hubSession) {
	h.mu.Lock()
	hs.mu.Lock()
	if hs.namespace != "" && h.byNamespace[hs.namespace] == hs {
		delete(h.byNamespace, hs.namespace)
	}
	var cancels []context.CancelFunc
	for _, c := range hs.inflight {
		cancels = append(cancels, c)
	}
	hs.mu.Unlock()
	h.mu.Unlock()
	for _, c := range cancels {
		c()
	}
}

// controlLoop is the hub control state machine (gateway.go:115-299). It returns why the
// session ended; every error it sends is fatal.
func (h *tokilakeHub) controlLoop(hs *hubSession, ctrl *smux.Stream) string {
	cr := newLineReader(ctrl)
	fatal := func(reqID, code, msg string) string {
		say("CONTROL-ERROR-SENT code=%s message=%s", code, oneLine(msg))
		hs.ctrl.write(&ControlMessage{Type: msgTypeError, RequestID: reqID, Error: &ErrorMessage{Code: code, Message: msg}})
		// Give the frame a moment to leave before the session is torn down.
		time.Sleep(100 * time.Millisecond)
		return code + ": " + msg
	}
	ack := func(reqID, message string) error {
		hs.mu.Lock()
		a := &AckMessage{Message: message, Namespace: hs.namespace, WorkerID: hs.workerID, ChannelID: hs.channelID}
		hs.mu.Unlock()
		return hs.ctrl.write(&ControlMessage{Type: msgTypeAck, RequestID: reqID, Ack: a})
	}
	for {
		if hs.registered() {
			ctrl.SetReadDeadline(time.Now().Add(hubHeartbeatTimeout))
		} else {
			ctrl.SetReadDeadline(time.Now().Add(hubRegisterTimeout))
		}
		var msg ControlMessage
		if err := cr.decode(&msg); err != nil {
			return "read control message: " + err.Error()
		}
		switch msg.Type {
		case msgTypeAuth:
			return fatal(msg.RequestID, "auth_already_completed", "auth message already handled")
		case msgTypeRegister:
			if hs.registered() {
				return fatal(msg.RequestID, "register_already_completed", "register message already handled")
			}
			if msg.Register == nil {
				return fatal(msg.RequestID, "register_payload_missing", "register payload is required")
			}
			if err := h.register(hs, msg.Register); err != nil {
				return fatal(msg.RequestID, "register_failed", err.Error())
			}
			if err := ack(msg.RequestID, "register_ok"); err != nil {
				return "write register ack: " + err.Error()
			}
			hs.mu.Lock()
			ns, models := hs.namespace, strings.Join(hs.models, ",")
			hs.mu.Unlock()
			say("WORKER-REGISTERED ns=%s models=%s", ns, models)
		case msgTypeHeartbeat:
			if !hs.registered() {
				return fatal(msg.RequestID, "not_registered", "worker is not registered")
			}
			if msg.Heartbeat == nil {
				return fatal(msg.RequestID, "heartbeat_payload_missing", "heartbeat payload is required")
			}
			if ms := normalizeModels(msg.Heartbeat.CurrentModels); len(ms) > 0 {
				hs.mu.Lock()
				hs.models = ms
				hs.mu.Unlock()
			}
			hs.mu.Lock()
			ns := hs.namespace
			hs.mu.Unlock()
			say("HEARTBEAT ns=%s request_id=%s", ns, msg.RequestID)
			if err := ack(msg.RequestID, "heartbeat_ok"); err != nil {
				return "write heartbeat ack: " + err.Error()
			}
		case msgTypeModelsSync:
			if !hs.registered() {
				return fatal(msg.RequestID, "not_registered", "worker is not registered")
			}
			if msg.ModelsSync == nil {
				return fatal(msg.RequestID, "models_payload_missing", "models_sync payload is required")
			}
			ms := normalizeModels(msg.ModelsSync.Models)
			if len(ms) == 0 {
				return fatal(msg.RequestID, "models_sync_failed", "at least one model is required")
			}
			hs.mu.Lock()
			hs.models = ms
			if g := strings.TrimSpace(msg.ModelsSync.Group); g != "" {
				hs.group = g
			}
			ns := hs.namespace
			hs.mu.Unlock()
			say("MODELS-SYNC ns=%s models=%s", ns, strings.Join(ms, ","))
			if err := ack(msg.RequestID, "models_sync_ok"); err != nil {
				return "write models_sync ack: " + err.Error()
			}
		case msgTypeAck:
			// ignored (e.g. cancel_ok / cancel_noop)
			if msg.Ack != nil {
				logf("tokilake: session %d: ack %s request_id=%s", hs.id, msg.Ack.Message, msg.RequestID)
			}
		case msgTypeError:
			if msg.Error != nil {
				logf("tokilake: session %d: worker error %s: %s", hs.id, msg.Error.Code, msg.Error.Message)
			}
		default:
			return fatal(msg.RequestID, "unsupported_message_type", "unsupported message type: "+msg.Type)
		}
	}
}

func normalizeModels(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range in {
		m = strings.TrimSpace(m)
		if m == "" || seen[m] {
			continue
		}
		seen[m] = true
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// register claims the namespace (a live namespace is never pre-empted) and binds ids.
func (h *tokilakeHub) register(hs *hubSession, reg *RegisterMessage) error {
	ns := strings.TrimSpace(reg.Namespace)
	if ns == "" {
		return errors.New("namespace is required")
	}
	models := normalizeModels(reg.Models)
	if len(models) == 0 {
		return errors.New("at least one model is required")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if other, ok := h.byNamespace[ns]; ok && other != hs {
		return errors.New("namespace already connected")
	}
	ids, ok := h.ids[ns]
	if !ok {
		h.nextWorker++
		ids = [2]int{h.nextWorker, 100 + h.nextWorker}
		h.ids[ns] = ids
	}
	h.byNamespace[ns] = hs
	hs.mu.Lock()
	hs.namespace = ns
	hs.workerID, hs.channelID = ids[0], ids[1]
	hs.group = strings.TrimSpace(reg.Group)
	if hs.group == "" {
		hs.group = "default"
	}
	hs.models = models
	hs.mu.Unlock()
	return nil
}

// ---------------------------------------------------------------------------------------
// HTTP API

var apiRouteKinds = map[string]string{
	"/v1/chat/completions": "chat_completions",
	"/v1/completions":      "completions",
	"/v1/embeddings":       "embeddings",
	"/v1/responses":        "responses",
	"/v1/rerank":           "rerank",
}

func apiError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]interface{}{"error": map[string]string{"message": msg, "type": typ, "code": typ}})
	w.Write(append(b, '\n'))
}

func (h *tokilakeHub) serveModels(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	owners := map[string]string{}
	for ns, hs := range h.byNamespace {
		hs.mu.Lock()
		if hs.workerID != 0 {
			for _, m := range hs.models {
				if _, ok := owners[m]; !ok {
					owners[m] = "tokiame/" + ns
				}
			}
		}
		hs.mu.Unlock()
	}
	h.mu.Unlock()
	names := make([]string, 0, len(owners))
	for m := range owners {
		names = append(names, m)
	}
	sort.Strings(names)
	data := make([]map[string]interface{}, 0, len(names))
	for _, m := range names {
		data = append(data, map[string]interface{}{"id": m, "object": "model", "created": 0, "owned_by": owners[m]})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]interface{}{"object": "list", "data": data})
}

func (h *tokilakeHub) pickWorker(model string) *hubSession {
	h.mu.Lock()
	defer h.mu.Unlock()
	var cands []*hubSession
	for _, hs := range h.byNamespace {
		if hs.serves(model) {
			cands = append(cands, hs)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[rand.Intn(len(cands))]
}

var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Transfer-Encoding": true, "Upgrade": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true,
}

// serveRelay is the hub side of one tunnelled request (roundtrip.go:45-172).
func (h *tokilakeHub) serveRelay(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		apiError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method not allowed")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "read body: "+err.Error())
		return
	}
	var fields struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := json.Unmarshal(body, &fields); err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "invalid JSON body: "+err.Error())
		return
	}
	hs := h.pickWorker(fields.Model)
	if hs == nil {
		apiError(w, http.StatusNotFound, "model_not_found", fmt.Sprintf("no registered worker serves model %q", fields.Model))
		return
	}
	hs.mu.Lock()
	ns := hs.namespace
	hs.mu.Unlock()
	if ns == "" {
		ns = "tokiame"
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/json"
	}
	accept := r.Header.Get("Accept")
	if fields.Stream {
		accept = "text/event-stream"
	} else if accept == "" {
		accept = "application/json"
	}
	treq := &TunnelRequest{
		RequestID: ns + ":relay:" + newUUID(),
		RouteKind: apiRouteKinds[r.URL.Path],
		Method:    http.MethodPost,
		Path:      r.URL.RequestURI(),
		Model:     fields.Model,
		Headers:   map[string]string{"Accept": accept, "Content-Type": ct},
		IsStream:  fields.Stream,
		Body:      body,
	}

	st, err := hs.sess.OpenStream()
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, "tokiame_request_failed", "open tokiame stream: "+err.Error())
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	hs.mu.Lock()
	hs.inflight[treq.RequestID] = cancel
	hs.mu.Unlock()
	finished := make(chan struct{})
	var finishOnce, cancelOnce sync.Once
	finish := func() { finishOnce.Do(func() { close(finished) }) }
	// sendCancel (roundtrip.go:119-134): the client went away (or the session was released)
	// before the body finished -> cancel_request on the control stream, then FIN.
	sendCancel := func() {
		cancelOnce.Do(func() {
			if hs.ctrl != nil {
				hs.ctrl.write(&ControlMessage{Type: msgTypeCancelRequest,
					RequestID:     fmt.Sprintf("%s:cancel:%d", ns, time.Now().UnixNano()),
					CancelRequest: &CancelRequestMessage{TargetRequestID: treq.RequestID, Reason: "client_disconnected"}})
			}
			say("CANCEL-SENT target=%s", treq.RequestID)
			st.Close()
		})
	}
	watcherDone := make(chan struct{})
	defer func() {
		finish()
		<-watcherDone
		hs.mu.Lock()
		delete(hs.inflight, treq.RequestID)
		hs.mu.Unlock()
		st.Close()
	}()
	go func() {
		defer close(watcherDone)
		select {
		case <-finished:
		case <-ctx.Done():
			sendCancel()
		}
	}()
	clientGone := func() bool { return r.Context().Err() != nil }

	if err := (&lineWriter{w: st}).write(treq); err != nil {
		apiError(w, http.StatusServiceUnavailable, "tokiame_request_failed", "write tunnel request: "+err.Error())
		return
	}
	lr := newLineReader(st)
	var head TunnelResponse
	if err := lr.decode(&head); err != nil {
		apiError(w, http.StatusServiceUnavailable, "tokiame_request_failed", "read tokiame response header: "+err.Error())
		return
	}
	if head.Error != nil {
		apiError(w, http.StatusServiceUnavailable, "tokiame_request_failed", "tokiame request failed: "+head.Error.Message)
		return
	}
	status := head.StatusCode
	if status == 0 {
		status = http.StatusBadGateway
	}
	for k, v := range head.Headers {
		if k == "" || v == "" || hopHeaders[http.CanonicalHeaderKey(k)] {
			continue
		}
		w.Header().Set(k, v)
	}
	w.WriteHeader(status)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	// Deviation (documented): once a body with a declared Content-Length has been fully
	// written, the client may close before the eof line arrives; that is not a client
	// disconnect, so no cancel_request is sent for it (the original races here).
	declared := int64(-1)
	if cl := w.Header().Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			declared = n
		}
	}
	var written int64
	write := func(b []byte) bool {
		if len(b) > 0 {
			n, err := w.Write(b)
			written += int64(n)
			if err != nil {
				return false
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if declared >= 0 && written >= declared {
			finish()
		}
		return true
	}
	if !write(head.BodyChunk) {
		sendCancel()
		return
	}
	if head.EOF {
		return
	}
	for {
		var fr TunnelResponse
		if err := lr.decode(&fr); err != nil {
			if clientGone() {
				if declared < 0 || written < declared {
					sendCancel()
				}
				return
			}
			// The original passes io.EOF to the pipe, so a truncated body looks complete.
			// Here the HTTP response is aborted instead, so the client sees an error.
			logf("tokilake: %s: body ended without eof: %v", treq.RequestID, err)
			say("RELAY-ABORTED request_id=%s reason=%s", treq.RequestID, oneLine(err.Error()))
			finish()
			panic(http.ErrAbortHandler)
		}
		if !write(fr.BodyChunk) {
			sendCancel()
			return
		}
		if fr.Error != nil {
			logf("tokilake: %s: error frame %s: %s", treq.RequestID, fr.Error.Code, fr.Error.Message)
			say("RELAY-ABORTED request_id=%s reason=error frame %s: %s", treq.RequestID, fr.Error.Code, oneLine(fr.Error.Message))
			finish()
			panic(http.ErrAbortHandler)
		}
		if fr.EOF {
			return
		}
	}
}
