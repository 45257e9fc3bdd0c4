package pool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/tcplens/tcplens/pool"
)

// echoDial stands in for the network so the examples run anywhere; real
// code leaves Config.Dial nil.
func echoDial(context.Context, *net.Dialer, string, string) (net.Conn, error) {
	client, server := net.Pipe()
	go func() {
		defer server.Close()
		io.Copy(server, server)
	}()
	return client, nil
}

func Example() {
	p, err := pool.New(pool.Config{MaxPerRoute: 8, Dial: echoDial})
	if err != nil {
		panic(err)
	}
	defer p.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := p.Get(ctx, "cache.internal:6379")
	if err != nil {
		panic(err)
	}
	reply := make([]byte, 5)
	if _, err := c.Write([]byte("hello")); err != nil {
		c.Discard() // broken: close it and free the slot
		panic(err)
	}
	if _, err := io.ReadFull(c, reply); err != nil {
		c.Discard()
		panic(err)
	}
	c.Release() // healthy: back to the pool
	s := p.Stats().Routes["cache.internal:6379"]
	fmt.Printf("reply %q; open %d, idle %d, dials %d\n", reply, s.Open, s.Idle, s.Dials)
	// Output: reply "hello"; open 1, idle 1, dials 1
}

func ExampleConfig_WithDefaults() {
	c, err := pool.Config{}.WithDefaults()
	if err != nil {
		panic(err)
	}
	fmt.Println("MaxTotal", c.MaxTotal, "MaxPerRoute", c.MaxPerRoute, "MinIdlePerRoute", c.MinIdlePerRoute)
	fmt.Println("WaitTimeout", c.WaitTimeout, "DialTimeout", c.DialTimeout)
	fmt.Println("keepalive", c.KeepAliveIdle, c.KeepAliveInterval, c.KeepAliveCount, "TCP_USER_TIMEOUT", c.UserTimeout)
	fmt.Println("IdleTimeout", c.IdleTimeout, "MaxLifetime", c.MaxLifetime, "jitter", c.LifetimeJitter)
	fmt.Println("IdleCheckAfter", c.IdleCheckAfter, "FailFastAfter", c.FailFastAfter)

	_, err = pool.Config{MaxTotal: 10, MaxPerRoute: 20}.WithDefaults()
	fmt.Println(err)
	// Output:
	// MaxTotal 64 MaxPerRoute 64 MinIdlePerRoute 0
	// WaitTimeout 5s DialTimeout 3s
	// keepalive 15s 5s 3 TCP_USER_TIMEOUT 30s
	// IdleTimeout 45s MaxLifetime 30m0s jitter 3m0s
	// IdleCheckAfter 500ms FailFastAfter 3
	// pool: invalid config: MaxPerRoute (20) is larger than MaxTotal (10)
}

func ExampleTimeoutError() {
	p, _ := pool.New(pool.Config{MaxPerRoute: 1, WaitTimeout: 10 * time.Millisecond, Dial: echoDial})
	defer p.Close()
	held, _ := p.Get(context.Background(), "db:5432")
	defer held.Release()

	_, err := p.Get(context.Background(), "db:5432")
	var te *pool.TimeoutError
	if errors.Is(err, pool.ErrPoolTimeout) && errors.As(err, &te) {
		fmt.Printf("timed out: %d waiting, %d/%d in use\n", te.Waiting, te.InUse, te.Max)
	}
	// Output: timed out: 1 waiting, 1/1 in use
}

func ExampleRouteDownError() {
	refused := func(context.Context, *net.Dialer, string, string) (net.Conn, error) {
		return nil, syscall.ECONNREFUSED
	}
	p, _ := pool.New(pool.Config{FailFastAfter: 3, Dial: refused})
	defer p.Close()

	_, err := p.Get(context.Background(), "api:443") // dials 3 times, then gives up
	fmt.Println(errors.Is(err, pool.ErrRouteDown), errors.Is(err, syscall.ECONNREFUSED))

	start := time.Now()
	_, err = p.Get(context.Background(), "api:443") // no dial, no wait
	fmt.Println(errors.Is(err, pool.ErrRouteDown), time.Since(start) < 10*time.Millisecond)
	fmt.Println(p.Stats().Routes["api:443"].Dials)
	// Output:
	// true true
	// true true
	// 3
}

func ExampleNewHTTPTransport() {
	tr, err := pool.NewHTTPTransport(pool.Config{MaxPerRoute: 64})
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	_ = client
	fmt.Println("MaxIdleConnsPerHost", tr.MaxIdleConnsPerHost, "MaxConnsPerHost", tr.MaxConnsPerHost)
	fmt.Println("IdleConnTimeout", tr.IdleConnTimeout)
	// Output:
	// MaxIdleConnsPerHost 64 MaxConnsPerHost 64
	// IdleConnTimeout 45s
}
