package pool

import (
	"errors"
	"fmt"
	"net"
	"time"
)

var (
	// ErrPoolTimeout matches (errors.Is) every *TimeoutError: Get waited
	// for WaitTimeout or for the caller's deadline without getting a
	// connection.
	ErrPoolTimeout = errors.New("pool: timed out waiting for a connection")
	// ErrClosed is returned by Get on a closed pool, including to Gets that
	// were waiting when Close was called.
	ErrClosed = errors.New("pool: closed")
	// ErrRouteDown matches (errors.Is) every *RouteDownError.
	ErrRouteDown = errors.New("pool: route down")
	// ErrConnReleased is returned by I/O on a Conn after Release or Discard.
	// It wraps net.ErrClosed.
	ErrConnReleased = fmt.Errorf("pool: connection already released: %w", net.ErrClosed)
)

// TimeoutError says why a Get gave up and what the route looked like then.
type TimeoutError struct {
	Addr    string
	Waited  time.Duration
	Waiting int // callers waiting on the route, this one included
	InUse   int // connections of the route handed out
	Open    int // connections of the route, idle or in use
	Dialing int
	Max     int // MaxPerRoute
	// LastDialErr is the route's last dial error, if any.
	LastDialErr error
	// Cause is context.DeadlineExceeded when the caller's deadline ran out
	// first, nil when WaitTimeout did.
	Cause error
}

func (e *TimeoutError) Error() string {
	s := fmt.Sprintf("pool: timed out after %v waiting for a connection to %s: %d callers waiting, %d/%d connections in use, %d dialling",
		e.Waited.Round(time.Millisecond), e.Addr, e.Waiting, e.InUse, e.Max, e.Dialing)
	if e.Cause != nil {
		s += " (" + e.Cause.Error() + ")"
	}
	if e.LastDialErr != nil {
		s += "; last dial error: " + e.LastDialErr.Error()
	}
	return s
}

// Is makes errors.Is(err, ErrPoolTimeout) true.
func (e *TimeoutError) Is(target error) bool { return target == ErrPoolTimeout }

func (e *TimeoutError) Unwrap() []error {
	var errs []error
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	if e.LastDialErr != nil {
		errs = append(errs, e.LastDialErr)
	}
	return errs
}

// RouteDownError is returned at once by Get on a route whose last
// FailFastAfter dials failed. It unwraps to the last dial error.
type RouteDownError struct {
	Addr     string
	Failures int // consecutive dial failures
	Err      error
}

func (e *RouteDownError) Error() string {
	return fmt.Sprintf("pool: route %s down after %d failed dials: %v", e.Addr, e.Failures, e.Err)
}

func (e *RouteDownError) Is(target error) bool { return target == ErrRouteDown }
func (e *RouteDownError) Unwrap() error        { return e.Err }
