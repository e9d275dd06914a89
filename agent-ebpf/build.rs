//! Compiles the C CO-RE programs with clang and generates the Rust mirror of
//! the shared header with bindgen. Both land in OUT_DIR and are embedded into
//! the crate, so the agent never looks for an object file at run time.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// Compilation units: one object, every probe family included by it.
const UNITS: &[&str] = &["golens"];
/// Files whose change must rebuild the objects.
const INPUTS: &[&str] = &[
    "bpf/golens.bpf.c",
    "bpf/common.bpf.h",
    "bpf/sched.bpf.c",
    "bpf/procs.bpf.c",
    "bpf/goruntime.bpf.c",
    "bpf/syscalls.bpf.c",
    "include/golens.h",
    "include/kernel_types.h",
];
const INSTALL_HINT: &str =
    "install the Debian packages `clang libbpf-dev` (or run `cargo xtask setup`)";

fn main() {
    if let Err(error) = run() {
        // One clear line, not a backtrace: this is what a missing package looks like.
        eprintln!("error: golens-ebpf build: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    for input in INPUTS {
        println!("cargo:rerun-if-changed={input}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=LIBBPF_INCLUDE");

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let libbpf_include = libbpf_include_dir()?;
    for unit in UNITS {
        compile_unit(&clang, &manifest, &libbpf_include, &out_dir, unit)?;
    }
    generate_bindings(&manifest, &out_dir)
}

/// Directory that holds `bpf/bpf_helpers.h` (libbpf-dev).
fn libbpf_include_dir() -> Result<PathBuf> {
    let candidates =
        env::var("LIBBPF_INCLUDE").map(|dir| vec![PathBuf::from(dir)]).unwrap_or_else(|_| {
            vec![PathBuf::from("/usr/include"), PathBuf::from("/usr/local/include")]
        });
    candidates
        .into_iter()
        .find(|dir| dir.join("bpf/bpf_helpers.h").is_file())
        .with_context(|| format!("libbpf headers (bpf/bpf_helpers.h) not found: {INSTALL_HINT}"))
}

fn compile_unit(
    clang: &str,
    manifest: &Path,
    libbpf_include: &Path,
    out_dir: &Path,
    unit: &str,
) -> Result<()> {
    let source = manifest.join("bpf").join(format!("{unit}.bpf.c"));
    let object = out_dir.join(format!("{unit}.bpf.o"));
    let output = Command::new(clang)
        .args(["-target", "bpfel", "-D__TARGET_ARCH_x86", "-g", "-O2"])
        .args(["-Wall", "-Werror", "-Wno-unused-function"])
        .arg("-I")
        .arg(manifest.join("include"))
        .arg("-I")
        .arg(manifest.join("bpf"))
        // After our own headers, and only for libbpf's: never the host's linux/ headers.
        .arg("-idirafter")
        .arg(libbpf_include)
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            bail!("`{clang}` not found: {INSTALL_HINT}")
        }
        Err(error) => return Err(error).with_context(|| format!("running `{clang}`")),
    };
    if !output.status.success() {
        bail!("clang failed on {}:\n{}", source.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn generate_bindings(manifest: &Path, out_dir: &Path) -> Result<()> {
    let include = manifest.join("include");
    let bindings = bindgen::Builder::default()
        .header_contents("wrapper.h", "#include \"kernel_types.h\"\n#include \"golens.h\"\n")
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_type("golens_.*")
        .allowlist_var("GOLENS_.*")
        .derive_default(true)
        .layout_tests(true)
        .use_core()
        .generate()
        .map_err(|error| {
            anyhow::anyhow!(
                "bindgen on include/golens.h failed ({error}); it needs libclang: {INSTALL_HINT}"
            )
        })?;
    bindings.write_to_file(out_dir.join("golens_bindings.rs")).context("writing golens_bindings.rs")
}
