package poller

import "time"

// Wait exposes the pause after a poll to tests.
func Wait(p *Poller, interval, took time.Duration) time.Duration { return p.wait(interval, took) }
