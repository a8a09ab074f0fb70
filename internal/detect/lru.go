package detect

import "container/list"

// lru is a bounded set of keys, for detectors' per-process state.
type lru[K comparable] struct {
	cap int
	l   *list.List
	m   map[K]*list.Element
}

func newLRU[K comparable](capacity int) *lru[K] {
	return &lru[K]{cap: capacity, l: list.New(), m: map[K]*list.Element{}}
}

func (c *lru[K]) has(k K) bool {
	e, ok := c.m[k]
	if ok {
		c.l.MoveToFront(e)
	}
	return ok
}

func (c *lru[K]) add(k K) {
	if e, ok := c.m[k]; ok {
		c.l.MoveToFront(e)
		return
	}
	c.m[k] = c.l.PushFront(k)
	if c.l.Len() > c.cap {
		old := c.l.Back()
		c.l.Remove(old)
		delete(c.m, old.Value.(K))
	}
}

func (c *lru[K]) remove(k K) {
	if e, ok := c.m[k]; ok {
		c.l.Remove(e)
		delete(c.m, k)
	}
}
