package pool

// connDeque holds a route's idle connections in a ring. Connections are
// pushed at the back; LIFO takes from the back (the warmest), FIFO from the
// front. The front is always the connection that has been idle longest.
type connDeque struct {
	buf  []*pconn
	head int
	n    int
}

func (d *connDeque) len() int { return d.n }

func (d *connDeque) push(pc *pconn) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.buf[(d.head+d.n)%len(d.buf)] = pc
	d.n++
}

func (d *connDeque) grow() {
	nb := make([]*pconn, max(4, 2*len(d.buf)))
	for i := 0; i < d.n; i++ {
		nb[i] = d.buf[(d.head+i)%len(d.buf)]
	}
	d.buf, d.head = nb, 0
}

// pop takes the back (LIFO) or the front (FIFO); nil when empty.
func (d *connDeque) pop(fifo bool) *pconn {
	if fifo {
		return d.popFront()
	}
	if d.n == 0 {
		return nil
	}
	d.n--
	i := (d.head + d.n) % len(d.buf)
	pc := d.buf[i]
	d.buf[i] = nil
	return pc
}

// popFront takes the connection idle longest; nil when empty.
func (d *connDeque) popFront() *pconn {
	if d.n == 0 {
		return nil
	}
	pc := d.buf[d.head]
	d.buf[d.head] = nil
	d.head = (d.head + 1) % len(d.buf)
	d.n--
	return pc
}

// removeIf drops every connection for which drop returns true, keeping the
// order of the others, and returns the dropped ones appended to out.
func (d *connDeque) removeIf(out []*pconn, drop func(*pconn) bool) []*pconn {
	kept := 0
	for i := 0; i < d.n; i++ {
		pc := d.buf[(d.head+i)%len(d.buf)]
		if drop(pc) {
			out = append(out, pc)
			continue
		}
		d.buf[(d.head+kept)%len(d.buf)] = pc
		kept++
	}
	for i := kept; i < d.n; i++ {
		d.buf[(d.head+i)%len(d.buf)] = nil
	}
	d.n = kept
	return out
}

// waiter is one Get blocked on a route. ch has room for exactly one result,
// so handing a connection over never blocks the giver.
type waiter struct {
	prev, next *waiter
	queued     bool
	ch         chan waitResult
}

type waitResult struct {
	pc  *pconn
	err error
}

// waitList is the route's FIFO wait queue, intrusive so that a Get that gives
// up removes itself in O(1).
type waitList struct {
	head, tail *waiter
	n          int
}

func (l *waitList) len() int { return l.n }

func (l *waitList) pushBack(w *waiter) {
	w.prev, w.next, w.queued = l.tail, nil, true
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
	l.n++
}

func (l *waitList) popFront() *waiter {
	w := l.head
	if w != nil {
		l.remove(w)
	}
	return w
}

func (l *waitList) remove(w *waiter) {
	if !w.queued {
		return
	}
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	l.n--
}

// deliver hands a result to a waiter already taken off the list.
func (w *waiter) deliver(pc *pconn, err error) { w.ch <- waitResult{pc: pc, err: err} }
