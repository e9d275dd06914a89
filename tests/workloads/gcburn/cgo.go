//go:build cgo

package main

// static int golens_answer(void) { return 42; }
import "C"

// cgoEnabled is true in builds linked with cgo; calling into C makes sure the
// binary really contains C code and the external linker's layout.
var cgoEnabled = C.golens_answer() == 42
