// gcburn forces GC cycles on request, for the Go runtime probe tests.
//
// It prints "ready" and waits for a line on stdin; then it runs -cycles
// runtime.GC() calls (with allocations in between, so each cycle marks
// real objects) while a goroutine spins without yielding (so sysmon has to
// preempt it), and prints one JSON line with the runtime's own accounting:
//
//	{"go":"go1.21.13","gc_cycles":50,"pause_total_ns":1234567,"cgo":false}
//
// gc_cycles and pause_total_ns are deltas of runtime.MemStats (NumGC,
// PauseTotalNs) over the run. Then it waits for stdin to close and exits 0.
//
// With -wait=false -duration D it starts at once, keeps allocating and
// collecting for D (a soak), reports, and exits 0; with -hold as well, it
// waits for stdin to close before exiting (so a short run's numbers can
// still be read from outside). The report's num_gc is NumGC since start.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"
)

var sink [][]byte

func allocate(n int) {
	batch := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		batch = append(batch, make([]byte, 256+i%512))
	}
	sink = batch
}

// spin loops without function calls: only an asynchronous preemption by
// sysmon (after 10 ms) lets other goroutines have its P.
func spin(stop *int32) {
	x := uint64(1)
	for atomic.LoadInt32(stop) == 0 {
		for i := 0; i < 1<<20; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	if x == 42 {
		fmt.Fprintln(os.Stderr, "impossible")
	}
}

func main() {
	cycles := flag.Int("cycles", 50, "runtime.GC() calls")
	spinFor := flag.Duration("spin", 300*time.Millisecond, "how long a goroutine spins without yielding")
	wait := flag.Bool("wait", true, "start on a line from stdin, exit when stdin closes")
	duration := flag.Duration("duration", 0, "run GC cycles for this long instead of -cycles")
	hold := flag.Bool("hold", false, "with -wait=false: after the report, wait for stdin to close")
	flag.Parse()

	in := bufio.NewScanner(os.Stdin)
	fmt.Println("ready")
	if *wait && !in.Scan() {
		return
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	var stop int32
	go spin(&stop)
	deadline := time.Now().Add(*duration)
	for i := 0; i < *cycles || time.Now().Before(deadline); i++ {
		allocate(2000)
		runtime.GC()
	}
	time.Sleep(*spinFor)
	atomic.StoreInt32(&stop, 1)

	runtime.ReadMemStats(&after)
	report, _ := json.Marshal(map[string]interface{}{
		"go":             runtime.Version(),
		"gc_cycles":      after.NumGC - before.NumGC,
		"pause_total_ns": after.PauseTotalNs - before.PauseTotalNs,
		"num_gc":         after.NumGC,
		"cgo":            cgoEnabled,
	})
	fmt.Println(string(report))
	for (*wait || *hold) && in.Scan() {
	}
}
