package main

// `gopeer tokiame`: a worker that behaves like the original Go Tokiame (tokiame/client.go,
// tokiame/client_data.go) over the WebSocket transport. See ../README.md and
// /work/shared/spec/tunnel-protocol.md sections 2, 4, 5 and 7.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/xtaci/smux"
)

const (
	controlAckTimeout = 15 * time.Second
	tunnelChunkSize   = 32 * 1024
)

type tokiameOpts struct {
	gatewayURL  string
	token       string
	namespace   string
	models      []string // sorted
	backend     string
	backendType string
	group       string
	nodeName    string
	heartbeat   time.Duration
	reconnect   time.Duration
}

type tokiameWorker struct {
	o tokiameOpts

	// in-flight local requests, keyed by TunnelRequest.request_id (process-wide, like the
	// original's requestCancels map).
	mu       sync.Mutex
	inflight map[string]context.CancelFunc
}

// registerRejected is returned when the hub answers register/models_sync with an error.
type registerRejected struct {
	action string
	code   string
	msg    string
}

func (e *registerRejected) Error() string {
	return fmt.Sprintf("%s rejected: %s", e.action, e.msg)
}

func cmdTokiame(args []string) {
	fs := flag.NewFlagSet("tokiame", flag.ExitOnError)
	gw := fs.String("gateway-url", "", "ws(s)://HOST:PORT/api/tokilake/connect (http(s) is rewritten to ws(s))")
	token := fs.String("token", "", "token sent as 'Authorization: Bearer <token>'")
	ns := fs.String("namespace", "", "worker namespace")
	models := fs.String("models", "", "comma-separated public model names served by --backend")
	backend := fs.String("backend", "", "base URL of the local OpenAI-compatible backend, e.g. http://127.0.0.1:8000")
	backendType := fs.String("backend-type", "openai", "backend_type advertised to the hub")
	group := fs.String("group", "", "group to register into (empty: the hub's default)")
	nodeName := fs.String("node-name", "", "node name (empty: omitted)")
	hb := fs.Float64("heartbeat-seconds", 15, "heartbeat interval in seconds")
	rc := fs.Float64("reconnect-seconds", 5, "delay before reconnecting after a session ends")
	timeout := fs.Float64("timeout", 0, "exit 1 with 'RESULT fail timeout' after this many seconds (0 = run until killed)")
	fs.Parse(args)

	o := tokiameOpts{
		gatewayURL: strings.TrimSpace(*gw), token: *token, namespace: strings.TrimSpace(*ns),
		models: splitModels(*models), backend: strings.TrimSpace(*backend),
		backendType: strings.TrimSpace(*backendType), group: strings.TrimSpace(*group),
		nodeName:  strings.TrimSpace(*nodeName),
		heartbeat: time.Duration(*hb * float64(time.Second)),
		reconnect: time.Duration(*rc * float64(time.Second)),
	}
	sort.Strings(o.models)
	if o.backendType == "" {
		o.backendType = "openai"
	}
	var missing []string
	if o.gatewayURL == "" {
		missing = append(missing, "--gateway-url")
	}
	if o.token == "" {
		missing = append(missing, "--token")
	}
	if o.namespace == "" {
		missing = append(missing, "--namespace")
	}
	if len(o.models) == 0 {
		missing = append(missing, "--models")
	}
	if o.backend == "" {
		missing = append(missing, "--backend")
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "gopeer tokiame: required: %s\n", strings.Join(missing, ", "))
		os.Exit(2)
	}
	if o.heartbeat <= 0 || o.reconnect < 0 {
		fmt.Fprintln(os.Stderr, "gopeer tokiame: --heartbeat-seconds must be > 0 and --reconnect-seconds >= 0")
		os.Exit(2)
	}
	if _, err := normalizeGatewayURL(o.gatewayURL); err != nil {
		fmt.Fprintf(os.Stderr, "gopeer tokiame: %v\n", err)
		os.Exit(2)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; os.Exit(0) }()
	armTimeout(*timeout)

	wk := &tokiameWorker{o: o, inflight: map[string]context.CancelFunc{}}
	for {
		err := wk.runOnce()
		var rej *registerRejected
		if errors.As(err, &rej) {
			say("REGISTER-FAIL %s %s", rej.code, oneLine(rej.msg))
			os.Exit(2)
		}
		reason := "session ended"
		if err != nil {
			reason = oneLine(err.Error())
		}
		say("DISCONNECTED %s", reason)
		time.Sleep(o.reconnect)
	}
}

// normalizeGatewayURL mirrors client.go:892-909: http->ws, https->wss, ws/wss as is.
func normalizeGatewayURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("invalid gateway_url: %v", err)
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return "", fmt.Errorf("unsupported gateway_url scheme %q", u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("gateway_url has no host")
	}
	return u.String(), nil
}

func (wk *tokiameWorker) requestID(prefix string) string {
	return wk.o.namespace + ":" + prefix + ":" + newUUID()
}

func (wk *tokiameWorker) hardwareInfo() map[string]interface{} {
	host, _ := os.Hostname()
	summaries := map[string]interface{}{}
	for _, m := range wk.o.models {
		summaries[m] = map[string]interface{}{
			"url":          wk.o.backend,
			"backend_type": wk.o.backendType,
			"has_api_keys": false,
			"header_count": 0,
		}
	}
	return map[string]interface{}{
		"hostname":               host,
		"goos":                   runtime.GOOS,
		"goarch":                 runtime.GOARCH,
		"num_cpu":                runtime.NumCPU(),
		"default_backend_type":   wk.o.backendType,
		"control_plane_backend":  wk.o.backendType,
		"model_target_summaries": summaries,
	}
}

// ackWithoutObject is what the original does with a nil msg.Ack: it crashes. We exit 3.
func ackWithoutObject(where string, line interface{}) {
	outMu.Lock()
	fmt.Fprintf(os.Stderr, "ACK-WITHOUT-OBJECT (%s) %v\n", where, line)
	os.Exit(3)
}

// runOnce is one connection: dial, register, models_sync, then serve until the data-stream
// accept loop or a heartbeat write fails (client.go:243-310).
func (wk *tokiameWorker) runOnce() error {
	o := wk.o
	gwURL, _ := normalizeGatewayURL(o.gatewayURL)
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+o.token)
	// The original uses a bare Dialer (no handshake timeout); we bound the handshake so a
	// test cannot hang forever on a hub that never answers.
	dialer := websocket.Dialer{Subprotocols: []string{subprotocol}, HandshakeTimeout: 30 * time.Second}
	ws, resp, err := dialer.Dial(gwURL, hdr)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("dial %s: %v (HTTP %s)", gwURL, err, resp.Status)
		}
		return fmt.Errorf("dial %s: %v", gwURL, err)
	}
	sess, err := smux.Client(newWSStreamConn(ws), smuxConfig(1))
	if err != nil {
		ws.Close()
		return fmt.Errorf("smux client: %v", err)
	}
	defer sess.Close()
	ctrl, err := sess.OpenStream()
	if err != nil {
		return fmt.Errorf("open control stream: %v", err)
	}
	defer ctrl.Close()
	cw := &lineWriter{w: ctrl}
	cr := newLineReader(ctrl)

	// register
	regID := wk.requestID("register")
	if err := cw.write(&ControlMessage{Type: msgTypeRegister, RequestID: regID, Register: &RegisterMessage{
		Namespace: o.namespace, NodeName: o.nodeName, Group: o.group, Models: o.models,
		HardwareInfo: wk.hardwareInfo(), BackendType: o.backendType,
	}}); err != nil {
		return fmt.Errorf("send register: %v", err)
	}
	regAck, err := awaitAck(ctrl, cr, regID, "register")
	if err != nil {
		return err
	}
	logf("tokiame: registered namespace=%s worker_id=%d channel_id=%d", regAck.Namespace, regAck.WorkerID, regAck.ChannelID)

	// models_sync
	msID := wk.requestID("models")
	if err := cw.write(&ControlMessage{Type: msgTypeModelsSync, RequestID: msID, ModelsSync: &ModelsSyncMessage{
		Group: o.group, Models: o.models, HardwareInfo: wk.hardwareInfo(), BackendType: o.backendType,
	}}); err != nil {
		return fmt.Errorf("send models_sync: %v", err)
	}
	if _, err := awaitAck(ctrl, cr, msID, "models_sync"); err != nil {
		return err
	}
	say("REGISTERED worker_id=%d", regAck.WorkerID)

	done := make(chan struct{})
	defer close(done)
	result := make(chan error, 2)

	// data-stream accept loop (client_data.go:30-50)
	go func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				result <- fmt.Errorf("accept data stream: %v", err)
				return
			}
			go wk.handleDataStream(st)
		}
	}()

	// control reader (client.go:510-556); its failure does NOT end the session.
	go func() {
		for {
			var msg ControlMessage
			if err := cr.decode(&msg); err != nil {
				logf("tokiame: control reader stopped: %v", err)
				return
			}
			switch msg.Type {
			case msgTypeAck:
				if msg.Ack == nil {
					ackWithoutObject("control reader", msg.RequestID)
				}
				logf("tokiame: ack %s request_id=%s", msg.Ack.Message, msg.RequestID)
			case msgTypeCancelRequest:
				if msg.CancelRequest == nil {
					continue
				}
				target := msg.CancelRequest.TargetRequestID
				result := "cancel_noop"
				if wk.cancelInflight(target) {
					result = "cancel_ok"
				}
				say("CANCEL-REQUEST target=%s reason=%s result=%s", target, msg.CancelRequest.Reason, result)
				if err := cw.write(&ControlMessage{Type: msgTypeAck, RequestID: msg.RequestID,
					Ack: &AckMessage{Message: result, Namespace: o.namespace}}); err != nil {
					logf("tokiame: write cancel ack: %v", err)
				}
			case msgTypeError:
				if msg.Error != nil {
					say("CONTROL-ERROR %s %s", msg.Error.Code, oneLine(msg.Error.Message))
					logf("tokiame: control reader stops after error message (like the original)")
					return
				}
			}
		}
	}()

	// heartbeat ticker (client.go:561-594): first beat one full interval after connecting.
	go func() {
		t := time.NewTicker(o.heartbeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			err := cw.write(&ControlMessage{Type: msgTypeHeartbeat, RequestID: wk.requestID("heartbeat"),
				Heartbeat: &HeartbeatMessage{NodeName: o.nodeName, HardwareInfo: wk.hardwareInfo(),
					CurrentModels: o.models}})
			if err != nil {
				result <- fmt.Errorf("send heartbeat: %v", err)
				return
			}
		}
	}()

	return <-result
}

// awaitAck waits up to 15 s for the ack/error with request_id == id (client.go:473-508).
func awaitAck(ctrl *smux.Stream, cr *lineReader, id, action string) (*AckMessage, error) {
	deadline := time.Now().Add(controlAckTimeout)
	ctrl.SetReadDeadline(deadline)
	defer ctrl.SetReadDeadline(time.Time{})
	for {
		var msg ControlMessage
		if err := cr.decode(&msg); err != nil {
			return nil, fmt.Errorf("wait %s ack: %v", action, err)
		}
		switch msg.Type {
		case msgTypeAck:
			if msg.RequestID != id {
				continue
			}
			if msg.Ack == nil {
				ackWithoutObject("await "+action, msg.RequestID)
			}
			return msg.Ack, nil
		case msgTypeError:
			if msg.RequestID != id {
				continue
			}
			code, text := "", ""
			if msg.Error != nil {
				code, text = msg.Error.Code, msg.Error.Message
			}
			return nil, &registerRejected{action: action, code: code, msg: text}
		}
	}
}

func (wk *tokiameWorker) trackInflight(id string, cancel context.CancelFunc) {
	wk.mu.Lock()
	wk.inflight[id] = cancel
	wk.mu.Unlock()
}

func (wk *tokiameWorker) untrackInflight(id string) {
	wk.mu.Lock()
	delete(wk.inflight, id)
	wk.mu.Unlock()
}

func (wk *tokiameWorker) cancelInflight(id string) bool {
	wk.mu.Lock()
	cancel, ok := wk.inflight[id]
	wk.mu.Unlock()
	if ok {
		cancel()
	}
	return ok
}

// handleDataStream serves one hub-opened stream (client_data.go:52-304).
func (wk *tokiameWorker) handleDataStream(st *smux.Stream) {
	defer st.Close()
	var req TunnelRequest
	if err := newLineReader(st).decode(&req); err != nil {
		logf("tokiame: stream %d: read tunnel request: %v", st.ID(), err)
		return
	}
	lw := &lineWriter{w: st}
	sendErr := func(code, msg string) {
		if err := lw.write(&TunnelResponse{RequestID: req.RequestID, Error: &ErrorMessage{Code: code, Message: msg}}); err != nil {
			logf("tokiame: %s: write error frame: %v", req.RequestID, err)
		}
	}

	model := strings.TrimSpace(req.Model)
	if model == "" {
		sendErr("target_not_found", "model is required")
		return
	}
	found := false
	for _, m := range wk.o.models {
		if m == model {
			found = true
		}
	}
	if !found {
		sendErr("target_not_found", fmt.Sprintf("model %q is not configured", model))
		return
	}
	target, err := buildLocalTargetURL(wk.o.backend, req.Path)
	if err != nil {
		sendErr("invalid_target_url", err.Error())
		return
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wk.trackInflight(req.RequestID, cancel)
	defer wk.untrackInflight(req.RequestID)

	method := req.Method
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader
	if len(req.Body) > 0 {
		body = bytes.NewReader(req.Body)
	}
	hreq, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		sendErr("local_request_failed", err.Error())
		return
	}
	for k, v := range req.Headers {
		if strings.EqualFold(k, "Accept") || strings.EqualFold(k, "Content-Type") {
			if v != "" {
				hreq.Header.Set(k, v)
			}
		}
	}
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		sendErr("local_request_failed", err.Error())
		return
	}
	defer resp.Body.Close()

	head := map[string]string{}
	for k, vs := range resp.Header {
		head[k] = strings.Join(vs, ", ")
	}
	if err := lw.write(&TunnelResponse{RequestID: req.RequestID, StatusCode: resp.StatusCode, Headers: head}); err != nil {
		logf("tokiame: %s: write head: %v", req.RequestID, err)
		return
	}
	buf := make([]byte, tunnelChunkSize)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			chunk := make([]byte, n)
			copy(chunk, buf[:n])
			if err := lw.write(&TunnelResponse{RequestID: req.RequestID, BodyChunk: chunk}); err != nil {
				logf("tokiame: %s: write body chunk: %v", req.RequestID, err)
				return
			}
		}
		if rerr == io.EOF {
			if err := lw.write(&TunnelResponse{RequestID: req.RequestID, EOF: true}); err != nil {
				logf("tokiame: %s: write eof: %v", req.RequestID, err)
			}
			return
		}
		if rerr != nil {
			sendErr("read_local_response_failed", rerr.Error())
			return
		}
	}
}

// buildLocalTargetURL mirrors buildLocalTargetURL/mergeTargetPath (client_data.go:306-355):
// join the target path and the request path without repeating the longest suffix of the
// target path that equals a prefix of the request path; the request's query replaces the
// target's query.
func buildLocalTargetURL(base, reqPath string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("invalid target url %q: %v", base, err)
	}
	if u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("invalid target url %q: scheme and host are required", base)
	}
	rp, rq := reqPath, ""
	if i := strings.IndexByte(reqPath, '?'); i >= 0 {
		rp, rq = reqPath[:i], reqPath[i+1:]
	}
	segs := func(p string) []string {
		var out []string
		for _, s := range strings.Split(p, "/") {
			if s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	ts, rs := segs(u.Path), segs(rp)
	overlap := 0
	for k := len(ts); k > 0; k-- {
		if k > len(rs) {
			continue
		}
		match := true
		for i := 0; i < k; i++ {
			if ts[len(ts)-k+i] != rs[i] {
				match = false
				break
			}
		}
		if match {
			overlap = k
			break
		}
	}
	all := append(append([]string{}, ts...), rs[overlap:]...)
	u.Path = "/" + strings.Join(all, "/")
	u.RawPath = ""
	u.RawQuery = rq
	return u.String(), nil
}
