// idle is the process that `cargo xtask bench scale` starts hundreds of: a Go
// program with the usual runtime threads (sysmon, GC workers, a timer) that
// burns no CPU, so what the bench measures is the agent's own cost.
//
// It prints "ready" once its goroutine runs, and then blocks until killed.
package main

import (
	"fmt"
	"time"
)

func main() {
	started := make(chan struct{})
	go func() {
		close(started)
		// A long period: the process keeps a timer (as real services do)
		// without waking up often enough to cost anything.
		for {
			time.Sleep(time.Hour)
		}
	}()
	<-started
	fmt.Println("ready")
	select {}
}
