package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/arborsh/arbor/client/apitypes"
)

// StreamError is a failure the server reported inside an event stream
// (an sse_error frame). Resuming from the last event id is the remedy.
type StreamError struct{ Message string }

func (e *StreamError) Error() string { return "event stream failed: " + e.Message }

// maxFrame bounds one server-sent event frame (the server keeps frames far
// below ConTree clients' 4 MiB cap).
const maxFrame = 8 << 20

// readEvents parses a text/event-stream body, calling fn for each event
// frame, until the completion event, the end of the stream, or an error.
// Comments (keepalives) are skipped; frames of unknown event types are
// delivered like any other, since the data line is the whole event.
func readEvents(body io.Reader, fn func(apitypes.OperationEvent) error) error {
	br := bufio.NewReaderSize(body, 64<<10)
	var event string
	var data bytes.Buffer
	for {
		line, err := readLine(br)
		if err != nil {
			if err == io.EOF && data.Len() == 0 {
				return nil
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read event stream: %w", err)
		}
		if len(line) == 0 { // end of frame
			if data.Len() == 0 {
				event = ""
				continue
			}
			if event == "sse_error" {
				return &StreamError{Message: data.String()}
			}
			var ev apitypes.OperationEvent
			if err := json.Unmarshal(data.Bytes(), &ev); err != nil {
				return fmt.Errorf("decode event frame: %w", err)
			}
			event = ""
			data.Reset()
			if err := fn(ev); err != nil {
				return err
			}
			if ev.Type == apitypes.EventCompletion {
				return nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			event = string(value)
		case "data":
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.Write(value)
			if data.Len() > maxFrame {
				return errors.New("read event stream: frame larger than 8 MiB")
			}
		}
	}
}

// readLine returns the next line without its line ending (LF or CRLF).
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if err == bufio.ErrBufferFull {
			if len(line) > maxFrame {
				return nil, errors.New("event stream line larger than 8 MiB")
			}
			continue
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		return bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r")), nil
	}
}
