package top

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/tcplens/tcplens/internal/watch"
)

// Sample takes a sample every interval until ctx ends and sends each one to
// the view as a FrameMsg, announced by a SamplingMsg so the view can show a
// slow dump. A failed sample is sent as an ErrMsg and retried at the next
// tick: a namespace that is briefly unreadable should not end the view.
// Build runs here, so the O(sockets) work never blocks the terminal.
func Sample(ctx context.Context, w *watch.Watcher, send func(tea.Msg)) {
	t := time.NewTicker(w.Interval())
	defer t.Stop()
	for {
		send(SamplingMsg{Start: time.Now()})
		s, err := w.Next(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			send(ErrMsg{Err: err, Time: time.Now()})
		} else {
			send(FrameMsg{Frame: Build(s)})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Run shows the live view on out (a terminal), reading keys from in, until
// the user quits or ctx ends. The terminal is restored either way.
func Run(parent context.Context, w *watch.Watcher, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	m := NewModel(w.Interval(), time.Now(), lipgloss.NewRenderer(out))
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out), tea.WithAltScreen())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Sample(ctx, w, p.Send)
	}()
	_, err := p.Run()
	cancel()
	<-done // a dump in flight ends at its next batch (the dump checks ctx)
	switch {
	case err == nil, errors.Is(err, tea.ErrInterrupted):
		return nil
	case errors.Is(err, tea.ErrProgramKilled) && parent.Err() != nil:
		return nil // SIGTERM or the caller's context: a normal end
	default:
		return fmt.Errorf("terminal: %w", err)
	}
}
