// gcburn forces GC cycles on request, for the Go runtime probe tests.
//
// It prints "ready" and waits for a line on stdin; then it runs -cycles
// runtime.GC() calls (with allocations in between, so each cycle marks
// real objects) while a goroutine spins without yielding (so sysmon has to
// preempt it), and prints one JSON line with the runtime's own accounting:
//
//	{"go":"go1.21.13","gc_cycles":50,"pause_total_ns":1234567,"cgo":false}
//
// gc_cycles and pause_total_ns are deltas of the runtime's NumGC and
// PauseTotal (the same numbers as runtime.MemStats' NumGC and PauseTotalNs)
// over the run, read with debug.ReadGCStats, which does not stop the world
// (ReadMemStats does: its own pauses would count in golens' numbers). On Go 1.22+ the report also bounds the sums of
// the runtime's /sched/pauses/{total,stopping}/gc:seconds histograms over the
// run (total_gc_lower_ns, total_gc_upper_ns, stopping_gc_lower_ns, ...): the
// histograms keep counts per bucket, not sums. Then it waits for stdin to close and exits 0.
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
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// The runtime's own pause histograms (Go 1.22+; absent before).
var pauseMetrics = []string{"/sched/pauses/total/gc:seconds", "/sched/pauses/stopping/gc:seconds"}

func readPauseMetrics() []metrics.Sample {
	samples := make([]metrics.Sample, len(pauseMetrics))
	for i, name := range pauseMetrics {
		samples[i].Name = name
	}
	metrics.Read(samples)
	return samples
}

// bounds of the sum of what a histogram counted between two reads: each
// sample lies between its bucket's edges (an infinite edge counts as the
// finite one beside it). ok is false when the runtime has no such metric.
func bounds(before, after metrics.Sample) (lowerNs, upperNs float64, ok bool) {
	if before.Value.Kind() != metrics.KindFloat64Histogram {
		return 0, 0, false
	}
	b, a := before.Value.Float64Histogram(), after.Value.Float64Histogram()
	for i := range a.Counts {
		n := float64(a.Counts[i] - b.Counts[i])
		lo, hi := a.Buckets[i], a.Buckets[i+1]
		if math.IsInf(lo, -1) {
			lo = 0
		}
		if math.IsInf(hi, 1) {
			hi = lo
		}
		lowerNs += n * lo * 1e9
		upperNs += n * hi * 1e9
	}
	return lowerNs, upperNs, true
}

var sink [][]byte

func allocate(n int) {
	batch := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		batch = append(batch, make([]byte, 256+i%512))
	}
	sink = batch
}

// spin keeps a goroutine busy. Its inner loop has no function call: only an asynchronous
// preemption by sysmon (after 10 ms) or a stop-the-world's signal lets other goroutines have
// its P. With GODEBUG=asyncpreemptoff=1 it can only be stopped at the call of the next round
// (about every millisecond), so every stop-the-world waits for it.
func spin(stop *int32) {
	x := uint64(1)
	for atomic.LoadInt32(stop) == 0 {
		x = spinRound(x)
	}
	if x == 42 {
		fmt.Fprintln(os.Stderr, "impossible")
	}
}

// spinRoundLength is the iterations of one round (-spin-round): about 1 ms for 1<<20 here.
var spinRoundLength = 1 << 20

// spinRound calls finishRound so that it is not a leaf: the compiler leaves the stack check
// (the synchronous preemption point) out of small leaf functions.
//
//go:noinline
func spinRound(x uint64) uint64 {
	for i := 0; i < spinRoundLength; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return finishRound(x)
}

//go:noinline
func finishRound(x uint64) uint64 { return x ^ 1 }

func main() {
	cycles := flag.Int("cycles", 50, "runtime.GC() calls")
	spinFor := flag.Duration("spin", 300*time.Millisecond, "how long a goroutine spins without yielding")
	wait := flag.Bool("wait", true, "start on a line from stdin, exit when stdin closes")
	duration := flag.Duration("duration", 0, "run GC cycles for this long instead of -cycles")
	hold := flag.Bool("hold", false, "with -wait=false: after the report, wait for stdin to close")
	flag.IntVar(&spinRoundLength, "spin-round", spinRoundLength, "iterations of the spinning goroutine between two function calls")
	flag.Parse()

	in := bufio.NewScanner(os.Stdin)
	fmt.Println("ready")
	if *wait && !in.Scan() {
		return
	}

	var before, after debug.GCStats
	debug.ReadGCStats(&before)
	pausesBefore := readPauseMetrics()

	var stop int32
	go spin(&stop)
	deadline := time.Now().Add(*duration)
	for i := 0; i < *cycles || time.Now().Before(deadline); i++ {
		allocate(2000)
		runtime.GC()
	}
	time.Sleep(*spinFor)
	atomic.StoreInt32(&stop, 1)

	pausesAfter := readPauseMetrics()
	debug.ReadGCStats(&after)
	fields := map[string]interface{}{
		"go":             runtime.Version(),
		"gc_cycles":      after.NumGC - before.NumGC,
		"pause_total_ns": int64(after.PauseTotal - before.PauseTotal),
		"num_gc":         after.NumGC,
		"cgo":            cgoEnabled,
	}
	for i, key := range []string{"total_gc", "stopping_gc"} {
		if lo, hi, ok := bounds(pausesBefore[i], pausesAfter[i]); ok {
			fields[key+"_lower_ns"] = lo
			fields[key+"_upper_ns"] = hi
		}
	}
	report, _ := json.Marshal(fields)
	fmt.Println(string(report))
	for (*wait || *hold) && in.Scan() {
	}
}
