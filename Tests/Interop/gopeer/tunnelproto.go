package main

// JSON types and NDJSON framing of the Tokilake <-> Tokiame tunnel protocol, with the
// exact field names and order of the Go originals (tokilake-core/protocol.go and
// tokilake-core/tunnel_stream.go). See /work/shared/spec/tunnel-protocol.md sections 4-5.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
)

const (
	msgTypeAuth          = "auth"
	msgTypeRegister      = "register"
	msgTypeHeartbeat     = "heartbeat"
	msgTypeModelsSync    = "models_sync"
	msgTypeCancelRequest = "cancel_request"
	msgTypeAck           = "ack"
	msgTypeError         = "error"
)

// ControlMessage is the envelope of every control-stream line.
type ControlMessage struct {
	Type          string                `json:"type"`
	RequestID     string                `json:"request_id,omitempty"`
	Auth          *AuthMessage          `json:"auth,omitempty"`
	Register      *RegisterMessage      `json:"register,omitempty"`
	Heartbeat     *HeartbeatMessage     `json:"heartbeat,omitempty"`
	ModelsSync    *ModelsSyncMessage    `json:"models_sync,omitempty"`
	CancelRequest *CancelRequestMessage `json:"cancel_request,omitempty"`
	Ack           *AckMessage           `json:"ack,omitempty"`
	Error         *ErrorMessage         `json:"error,omitempty"`
}

type AuthMessage struct {
	Token string `json:"token"`
}

type RegisterMessage struct {
	Namespace    string                 `json:"namespace"`
	NodeName     string                 `json:"node_name,omitempty"`
	Group        string                 `json:"group,omitempty"`
	Models       []string               `json:"models,omitempty"`
	HardwareInfo map[string]interface{} `json:"hardware_info,omitempty"`
	BackendType  string                 `json:"backend_type,omitempty"`
}

type HeartbeatMessage struct {
	Status        int                    `json:"status,omitempty"`
	NodeName      string                 `json:"node_name,omitempty"`
	HardwareInfo  map[string]interface{} `json:"hardware_info,omitempty"`
	CurrentModels []string               `json:"current_models,omitempty"`
}

type ModelsSyncMessage struct {
	Group        string                 `json:"group,omitempty"`
	Models       []string               `json:"models,omitempty"`
	HardwareInfo map[string]interface{} `json:"hardware_info,omitempty"`
	BackendType  string                 `json:"backend_type,omitempty"`
}

type CancelRequestMessage struct {
	TargetRequestID string `json:"target_request_id"`
	Reason          string `json:"reason,omitempty"`
}

type AckMessage struct {
	Message   string `json:"message,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	WorkerID  int    `json:"worker_id,omitempty"`
	ChannelID int    `json:"channel_id,omitempty"`
}

type ErrorMessage struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
}

// TunnelRequest is the single hub->worker line on a data stream. Body is []byte, so Go
// marshals it as base64 and unmarshals either base64 or a JSON array of 0..255 integers.
type TunnelRequest struct {
	RequestID string            `json:"request_id"`
	RouteKind string            `json:"route_kind"`
	Method    string            `json:"method"`
	Path      string            `json:"path"`
	Model     string            `json:"model,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
	IsStream  bool              `json:"is_stream,omitempty"`
	Body      []byte            `json:"body,omitempty"`
}

// TunnelResponse is one worker->hub line on a data stream (head, body chunk, eof or error).
type TunnelResponse struct {
	RequestID  string            `json:"request_id"`
	StatusCode int               `json:"status_code,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	BodyChunk  []byte            `json:"body_chunk,omitempty"`
	EOF        bool              `json:"eof,omitempty"`
	Error      *ErrorMessage     `json:"error,omitempty"`
}

// lineWriter writes compact JSON objects followed by '\n', one Write per line, serialised.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lineWriter) write(v interface{}) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	lw.mu.Lock()
	defer lw.mu.Unlock()
	_, err = lw.w.Write(b)
	return err
}

// lineReader reads NDJSON lines: up to '\n', trimmed, blank lines skipped, no length limit.
type lineReader struct {
	r *bufio.Reader
}

func newLineReader(r io.Reader) *lineReader { return &lineReader{r: bufio.NewReader(r)} }

// next returns the next non-blank line. A final line without '\n' is returned as well
// (bufio.ReadBytes gives data plus io.EOF); the following call then returns io.EOF.
func (lr *lineReader) next() ([]byte, error) {
	for {
		line, err := lr.r.ReadBytes('\n')
		trimmed := bytes.TrimSpace(line)
		if len(trimmed) > 0 {
			return trimmed, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func (lr *lineReader) decode(v interface{}) error {
	line, err := lr.next()
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("decode %q: %w", truncate(string(line), 200), err)
	}
	return nil
}

// newUUID returns a random RFC 4122 version-4 UUID string.
func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// oneLine flattens an error text so that it fits on one stdout line.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r", " "), "\n", " ")
}

// splitModels splits a comma list, trims, drops empties and duplicates, keeps order.
func splitModels(s string) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range strings.Split(s, ",") {
		m = strings.TrimSpace(m)
		if m == "" || seen[m] {
			continue
		}
		seen[m] = true
		out = append(out, m)
	}
	return out
}
