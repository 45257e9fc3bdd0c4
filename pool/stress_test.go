package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStressInvariants mixes Gets on several routes with short deadlines,
// discards, double releases and limit changes, then checks the books.
func TestStressInvariants(t *testing.T) {
	checkLeaks(t)
	s := &pipeServer{}
	p := newTestPool(t, s, Config{MaxTotal: 6, MaxPerRoute: 4, WaitTimeout: 50 * time.Millisecond,
		MaintenanceInterval: 5 * time.Millisecond, IdleCheckAfter: time.Millisecond, IdleTimeout: 30 * time.Millisecond})
	var over atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // limits change under load
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Millisecond):
			}
			l := Limits{MaxTotal: 6, MaxPerRoute: 4}
			if i%2 == 1 {
				l = Limits{MaxTotal: 3, MaxPerRoute: 2}
			}
			if err := p.SetLimits(l); err != nil {
				t.Error(err)
			}
		}
	}()
	var workers sync.WaitGroup
	for w := range 32 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range 150 {
				addr := fmt.Sprintf("r%d:1", rng.IntN(4))
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(20))*time.Millisecond)
				c, err := p.Get(ctx, addr)
				cancel()
				if err != nil {
					if !errors.Is(err, ErrPoolTimeout) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("unexpected error: %v", err)
					}
					continue
				}
				if n := p.total.Load(); n > 6 {
					over.Add(1)
				}
				switch rng.IntN(10) {
				case 0:
					c.Discard()
				case 1:
					c.Release()
					c.Release()
				default:
					if err := echoRoundTrip(c); err != nil {
						t.Errorf("round trip: %v", err)
					}
					c.Release()
				}
			}
		}()
	}
	workers.Wait()
	close(stop)
	wg.Wait()
	if over.Load() > 0 {
		t.Errorf("MaxTotal exceeded %d times", over.Load())
	}
	eventually(t, 2*time.Second, "books balance", func() bool {
		st := p.Stats()
		return int64(st.Total.Open+st.Total.Dialing) == p.total.Load() && st.Total.InUse == 0 && st.Total.Waiting == 0
	})
	st := p.Stats()
	if st.Total.Open > st.Limits.MaxTotal+1 {
		t.Errorf("open %d above MaxTotal %d after quiescing", st.Total.Open, st.Limits.MaxTotal)
	}
	t.Logf("total %+v", st.Total)
}
