package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// SendInputIn is the input of send_input.
type SendInputIn struct {
	OperationID string `json:"operation_id" jsonschema:"a running instance: started by run with keep_stdin=true, or a copy from fork_instance or restore_instance"`
	Input       string `json:"input,omitempty" jsonschema:"text written to the instance's main process's standard input; end each line with a newline"`
	Close       bool   `json:"close,omitempty" jsonschema:"close its standard input after input: a REPL or a loop reading stdin then ends"`
	Signal      string `json:"signal,omitempty" jsonschema:"a signal sent to the main process after input, e.g. CONT to resume an original paused by fork_instance pause_parent, INT to interrupt"`
	Until       string `json:"until,omitempty" jsonschema:"return as soon as the new stdout contains this text (a prompt, a marker your input prints), instead of waiting the whole timeout"`
	Timeout     int    `json:"timeout" jsonschema:"seconds to collect the output the input caused"`
	MaxOutput   int    `json:"max_output,omitempty" jsonschema:"bytes of the new stdout and of the new stderr to show (head and tail); default 8000"`
}

// SendInputOut is the output of send_input.
type SendInputOut struct {
	OperationID string `json:"operation_id"`
	Stdout      string `json:"stdout" jsonschema:"what the main process wrote to stdout after the input"`
	Stderr      string `json:"stderr"`
	Matched     bool   `json:"matched" jsonschema:"whether stdout came to contain until"`
	Exited      bool   `json:"exited" jsonschema:"whether the main process exited (the instance then ends)"`
	ExitCode    *int   `json:"exit_code,omitempty"`
	Note        string `json:"note,omitempty"`
}

func (s *server) addInputTools(ms *mcpsdk.Server) {
	addTool(ms, &mcpsdk.Tool{
		Name:        "send_input",
		Annotations: additive,
		Description: "Talk to a RUNNING instance (a REPL, a server, a loop reading commands): write input to its main process's stdin (and/or send it a signal), " +
			"then return what it printed after that, up to timeout seconds or until stdout contains until. FREE (the sandbox already runs). " +
			"Start such an instance with run keep_stdin=true; fork_instance and restore_instance copies take input the same way.",
	}, map[string]any{"timeout": 10}, onInstance(s, func(in SendInputIn) string { return in.OperationID }, s.sendInput))
}

func (s *server) sendInput(ctx context.Context, op string, in SendInputIn) (SendInputOut, error) {
	if in.Timeout <= 0 || in.Timeout > 600 {
		return SendInputOut{}, errors.New("timeout must be 1 to 600 seconds")
	}
	if in.Input == "" && !in.Close && in.Signal == "" {
		return SendInputOut{}, errors.New("nothing to send: give input, close=true or a signal")
	}
	maxOut := in.MaxOutput
	if maxOut <= 0 {
		maxOut = s.opts.MaxOutput
	}
	maxOut = min(maxOut, maxSendInputOutput)
	main := 1
	// The output so far, to follow only what comes after the input.
	after := int64(-1)
	err := s.b.StreamEvents(ctx, op, client.EventsOptions{After: -1, Spid: &main}, func(ev apitypes.OperationEvent) error {
		after = max(after, ev.ID)
		return nil
	})
	if err != nil {
		return SendInputOut{}, err
	}
	if in.Input != "" || in.Close {
		r := apitypes.NewStreamRepr([]byte(in.Input), false)
		if err := s.b.WriteStdin(ctx, op, main, apitypes.ClosableStreamRepr{Value: r.Value, Encoding: r.Encoding, Close: ptr(in.Close)}); err != nil {
			return SendInputOut{}, err
		}
	}
	if in.Signal != "" {
		if err := s.b.KillSubprocess(ctx, op, main, in.Signal); err != nil {
			return SendInputOut{}, err
		}
	}
	out := SendInputOut{OperationID: op}
	// The output is the sandbox's and may be endless: kept only as far as
	// it is shown, and searched for until across the chunks' seams.
	stdout, stderr := &streamTail{max: maxOut}, &streamTail{max: maxOut}
	until := &untilWatch{until: in.Until}
	matched := errors.New("matched")
	wctx, cancel := context.WithTimeout(ctx, time.Duration(in.Timeout)*time.Second)
	defer cancel()
	err = s.b.StreamEvents(wctx, op, client.EventsOptions{After: after, Follow: true, Spid: &main}, func(ev apitypes.OperationEvent) error {
		switch ev.Type {
		case apitypes.EventStdout, apitypes.EventStderr:
			b, err := ev.StreamBytes()
			if err != nil {
				return err
			}
			if ev.Type == apitypes.EventStderr {
				stderr.write(b)
				return nil
			}
			stdout.write(b)
			if until.saw(b) {
				return matched
			}
		case apitypes.EventExit:
			var d apitypes.EventDataExit
			if json.Unmarshal(ev.Data, &d) == nil {
				out.Exited, out.ExitCode = true, ptr(d.Code)
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, matched):
		out.Matched = true
	case err != nil && wctx.Err() == nil:
		return SendInputOut{}, err
	}
	var notes []string
	var cut bool
	if out.Stdout, cut = stdout.clip(); cut {
		notes = append(notes, fmt.Sprintf("stdout has %d bytes, showing the first and last %d", stdout.n, maxOut))
	}
	if out.Stderr, cut = stderr.clip(); cut {
		notes = append(notes, fmt.Sprintf("stderr has %d bytes, showing the first and last %d", stderr.n, maxOut))
	}
	if in.Until != "" && !out.Matched && !out.Exited {
		notes = append(notes, fmt.Sprintf("stdout did not contain %q within %d s: call send_input with a longer timeout, or get_operation", in.Until, in.Timeout))
	}
	out.Note = strings.Join(notes, "; ")
	return out, nil
}

// maxSendInputOutput bounds what send_input shows (and keeps) of each
// stream, whatever max_output asks.
const maxSendInputOutput = 1 << 20

// untilWatch finds a text in a stream given in chunks, also where it
// spans two, keeping only the last len(until)-1 bytes between chunks.
type untilWatch struct {
	until string
	seam  []byte
}

// saw reports whether until has appeared in the stream, b included.
func (u *untilWatch) saw(b []byte) bool {
	if u.until == "" {
		return false
	}
	u.seam = append(u.seam, b...)
	found := strings.Contains(string(u.seam), u.until)
	u.seam = append(u.seam[:0], u.seam[max(0, len(u.seam)-(len(u.until)-1)):]...)
	return found
}
