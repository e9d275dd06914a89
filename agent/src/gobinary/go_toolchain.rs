//! Test support: builds small real Go programs with a real Go toolchain.
//!
//! The toolchain is `$GOLENS_TEST_GO` (a path to a `go` binary, or several separated by `:`
//! to run the same tests over a version matrix), else `go` on PATH. Without one the tests
//! panic: they must not pass silently. Binaries and the Go build cache live under
//! `$TMPDIR/golens-test-gocache`, keyed by toolchain, variant and source, so repeated runs reuse
//! them.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// Module path of the test programs (asserted from `.go.buildinfo`).
pub const MODULE_PATH: &str = "example.com/golens/testprog";

const NEED_GO: &str = "These tests need a Go toolchain: run `cargo xtask setup`, \
                       or set GOLENS_TEST_GO to a go binary";

const GO_MOD: &str = "module example.com/golens/testprog\n\ngo 1.19\n";

/// Forces a GC (so `runtime.gcStart` is certainly linked and run); with argument `sleep` it
/// prints "ready" and waits to be killed, for tests on a running process (`/proc/PID/exe`,
/// `/proc/PID/mem`). The cgo program does the same after printing its C call's result.
const MAIN_GO: &str = r#"package main

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

func main() {
	runtime.GC()
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		fmt.Println("ready")
		time.Sleep(time.Hour)
	}
}
"#;

const CGO_MAIN_GO: &str = r#"package main

// static int golens_add(int a, int b) { return a + b; }
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

func main() {
	runtime.GC()
	fmt.Println(C.golens_add(1, 2))
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		fmt.Println("ready")
		time.Sleep(time.Hour)
	}
}
"#;

/// The build variants the tests cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Internal linking, static, with `.symtab`.
    Default,
    /// `-ldflags=-s -w`: no `.symtab`.
    Stripped,
    /// `-buildmode=pie` (internal linking without cgo).
    Pie,
    /// `-buildmode=pie -ldflags=-s -w`.
    PieStripped,
    /// `CGO_ENABLED=1` with `import "C"`: external linking, C code before Go text.
    Cgo,
    /// cgo, PIE and stripped: external linking; before Go 1.26 the pclntab hides inside
    /// `.data.rel.ro` with no name or symbol.
    CgoPieStripped,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Default,
        Variant::Stripped,
        Variant::Pie,
        Variant::PieStripped,
        Variant::Cgo,
        Variant::CgoPieStripped,
    ];

    pub fn stripped(self) -> bool {
        matches!(self, Variant::Stripped | Variant::PieStripped | Variant::CgoPieStripped)
    }

    pub fn pie(self) -> bool {
        matches!(self, Variant::Pie | Variant::PieStripped | Variant::CgoPieStripped)
    }

    fn cgo(self) -> bool {
        matches!(self, Variant::Cgo | Variant::CgoPieStripped)
    }

    fn build_args(self) -> Vec<&'static str> {
        let mut args = Vec::new();
        if self.pie() {
            args.push("-buildmode=pie");
        }
        if self.stripped() {
            args.push("-ldflags=-s -w");
        }
        args
    }
}

/// One Go toolchain.
#[derive(Debug, Clone)]
pub struct GoToolchain {
    pub go: PathBuf,
    /// `go env GOVERSION`, e.g. "go1.21.13".
    pub version: String,
}

fn cache_root() -> PathBuf {
    std::env::temp_dir().join("golens-test-gocache")
}

impl GoToolchain {
    /// All toolchains named by `GOLENS_TEST_GO`, else `go` from PATH. Panics when none works.
    pub fn from_env() -> Vec<GoToolchain> {
        match std::env::var_os("GOLENS_TEST_GO") {
            Some(list) if !list.is_empty() => {
                std::env::split_paths(&list).map(|go| GoToolchain::at(&go)).collect()
            }
            _ => vec![GoToolchain::at(Path::new("go"))],
        }
    }

    /// The toolchain whose `go` binary is `go`. Panics with the fix when it cannot run.
    pub fn at(go: &Path) -> GoToolchain {
        let output =
            Command::new(go).args(["env", "GOVERSION"]).env("GOTOOLCHAIN", "local").output();
        match output {
            Ok(out) if out.status.success() => GoToolchain {
                go: go.to_path_buf(),
                version: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            },
            Ok(out) => panic!(
                "`{} env GOVERSION` failed ({}): {}\n{NEED_GO}",
                go.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("cannot run Go toolchain `{}`: {e}\n{NEED_GO}", go.display()),
        }
    }

    /// Builds (or reuses) the test program in `variant` and returns the binary's path.
    pub fn build(&self, variant: Variant) -> PathBuf {
        let source = if variant.cgo() { CGO_MAIN_GO } else { MAIN_GO };
        let mut hasher = DefaultHasher::new();
        (&self.go, &self.version, variant, GO_MOD, source).hash(&mut hasher);
        let key = format!("{}-{:?}-{:016x}", self.version, variant, hasher.finish());
        let root = cache_root();
        let binary = root.join("bin").join(&key);
        if binary.exists() {
            return binary;
        }

        // Private source dir and output name, renamed into place: tests run in parallel
        // threads and processes.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let src = root.join("src").join(format!("{key}-{unique}"));
        std::fs::create_dir_all(&src).expect("create Go source dir");
        std::fs::create_dir_all(root.join("bin")).expect("create Go bin dir");
        std::fs::write(src.join("go.mod"), GO_MOD).expect("write go.mod");
        std::fs::write(src.join("main.go"), source).expect("write main.go");
        let partial = root.join("bin").join(format!("{key}.{unique}.partial"));

        let output = Command::new(&self.go)
            .arg("build")
            .args(variant.build_args())
            .arg("-o")
            .arg(&partial)
            .arg(".")
            .current_dir(&src)
            .env("CGO_ENABLED", if variant.cgo() { "1" } else { "0" })
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOCACHE", root.join("gocache"))
            .env("GOPATH", root.join("gopath"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.go.display()));
        let _ = std::fs::remove_dir_all(&src);
        assert!(
            output.status.success(),
            "{} build {variant:?} failed: {}",
            self.version,
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::rename(&partial, &binary).expect("move built binary into place");
        binary
    }
}
