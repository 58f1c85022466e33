package main

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// wsStreamConn adapts a WebSocket to an io.ReadWriteCloser exactly like
// Tokilake's tokilake-core/ws_conn.go:
//   - every Write is sent as one BINARY message (smux writes one frame per Write,
//     so each message carries exactly one smux frame);
//   - Read concatenates the payloads of consecutive binary messages into a single
//     byte stream, ignoring message boundaries, and silently skips text messages;
//   - Close closes the underlying connection without sending a WebSocket close frame.
//
// It deliberately has no WriteBuffers method, so smux's sendLoop uses the
// single-Write path (header+payload in one buffer).
type wsStreamConn struct {
	ws *websocket.Conn

	readMu sync.Mutex
	reader io.Reader

	writeMu sync.Mutex
}

func newWSStreamConn(ws *websocket.Conn) *wsStreamConn {
	return &wsStreamConn{ws: ws}
}

func (c *wsStreamConn) Read(p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.reader == nil {
			mt, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if mt != websocket.BinaryMessage {
				continue // text messages are skipped entirely
			}
			c.reader = r
		}
		n, err := c.reader.Read(p)
		if err == io.EOF {
			c.reader = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err != nil {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (c *wsStreamConn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsStreamConn) Close() error {
	return c.ws.Close()
}

func (c *wsStreamConn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *wsStreamConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

func (c *wsStreamConn) SetDeadline(t time.Time) error {
	if err := c.ws.SetReadDeadline(t); err != nil {
		return err
	}
	return c.ws.SetWriteDeadline(t)
}
