package detect

import "container/list"

// lru is a bounded set of strings, for detectors' per-process state.
type lru struct {
	cap int
	l   *list.List
	m   map[string]*list.Element
}

func newLRU(capacity int) *lru {
	return &lru{cap: capacity, l: list.New(), m: map[string]*list.Element{}}
}

func (c *lru) has(k string) bool {
	e, ok := c.m[k]
	if ok {
		c.l.MoveToFront(e)
	}
	return ok
}

func (c *lru) add(k string) {
	if e, ok := c.m[k]; ok {
		c.l.MoveToFront(e)
		return
	}
	c.m[k] = c.l.PushFront(k)
	if c.l.Len() > c.cap {
		old := c.l.Back()
		c.l.Remove(old)
		delete(c.m, old.Value.(string))
	}
}

func (c *lru) remove(k string) {
	if e, ok := c.m[k]; ok {
		c.l.Remove(e)
		delete(c.m, k)
	}
}
