package harness

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrTimeout is what WaitFor returns, wrapped, when the condition did not
// hold in time.
var ErrTimeout = errors.New("condition not met")

// WaitFor polls cond every 20 ms until it holds or returns an error. It
// gives up when timeout passes (ErrTimeout) or ctx ends; cond always runs
// at least once.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w within %s", ErrTimeout, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
