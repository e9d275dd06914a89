//! Tests against real Go binaries, built at test time (see `go_toolchain`).
//! Run a version matrix with `GOLENS_TEST_GO=/path/go1.19/bin/go:/path/go1.27/bin/go`.

use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{LittleEndian, Object, ObjectSection};

use super::go_toolchain::{GoToolchain, Variant, MODULE_PATH};
use super::*;

/// Functions the runtime probes need, plus one of the program's own.
const FUNCTIONS: [&str; 4] = [
    "runtime.gcStart",
    "runtime.stopTheWorldWithSema",
    "runtime.startTheWorldWithSema",
    "main.main",
];

struct Built {
    go: GoToolchain,
    variant: Variant,
    path: PathBuf,
    binary: GoBinary,
}

fn build_all() -> Vec<Built> {
    let mut built = Vec::new();
    for go in GoToolchain::from_env() {
        for variant in Variant::ALL {
            let path = go.build(variant);
            let binary =
                GoBinary::open(&path).unwrap_or_else(|e| panic!("{} {variant:?}: {e}", go.version));
            built.push(Built { go: go.clone(), variant, path, binary });
        }
    }
    built
}

fn find<'a>(built: &'a [Built], go: &GoToolchain, variant: Variant) -> &'a Built {
    built.iter().find(|b| b.go.go == go.go && b.variant == variant).expect("variant was built")
}

/// The bytes at `address` according to `object`'s view of the section holding it.
fn section_bytes(path: &Path, address: u64, len: usize) -> Vec<u8> {
    let data = std::fs::read(path).unwrap();
    let elf = ElfFile64::<LittleEndian>::parse(&*data).unwrap();
    let section = elf
        .sections()
        .find(|s| s.address() <= address && address < s.address() + s.size())
        .expect("a section holds the address");
    let at = (address - section.address()) as usize;
    section.data().unwrap()[at..at + len].to_vec()
}

fn decode_in_file(file: &[u8], offset: u64, address: u64) -> iced_x86::Instruction {
    let bytes = &file[offset as usize..];
    decode_one(&bytes[..bytes.len().min(16)], address).expect("decodable instruction")
}

#[test]
fn build_facts_match_the_toolchain() {
    for b in build_all() {
        let what = format!("{} {:?}", b.go.version, b.variant);
        assert_eq!(b.binary.go_version.as_deref(), Some(b.go.version.as_str()), "{what}");
        assert_eq!(b.binary.module_path.as_deref(), Some(MODULE_PATH), "{what}");
        assert_eq!(b.binary.stripped, b.variant.stripped(), "{what}");
        assert_eq!(b.binary.pie, b.variant.pie(), "{what}");
        assert!(b.binary.pclntab_version().is_some(), "{what}: no pclntab");
    }
}

#[test]
fn symtab_and_pclntab_agree_and_stripping_keeps_addresses() {
    let built = build_all();
    for go in GoToolchain::from_env() {
        for (full, stripped) in
            [(Variant::Default, Variant::Stripped), (Variant::Pie, Variant::PieStripped)]
        {
            let full = find(&built, &go, full);
            let stripped = find(&built, &go, stripped);
            for name in FUNCTIONS {
                let what = format!("{} {:?} {name}", go.version, full.variant);
                let sym = full
                    .binary
                    .symtab_function(name)
                    .unwrap_or_else(|| panic!("{what}: not in .symtab"));
                let pcln = full
                    .binary
                    .pclntab_function(name)
                    .unwrap_or_else(|| panic!("{what}: not in pclntab"));
                assert_eq!(sym.source, SymbolSource::Symtab);
                assert_eq!(pcln.source, SymbolSource::Pclntab);
                assert_eq!(sym.address, pcln.address, "{what}");
                // pclntab sizes run to the next function: symbol size plus < 64 bytes of padding.
                assert!(
                    pcln.size >= sym.size && pcln.size - sym.size < 64,
                    "{what}: {sym:?} {pcln:?}"
                );
                assert_eq!(full.binary.function(name), Some(sym.clone()), "{what}");

                assert_eq!(stripped.binary.symtab_function(name), None, "{what}");
                let from_stripped =
                    stripped.binary.function(name).unwrap_or_else(|| panic!("{what}: stripped"));
                assert_eq!(from_stripped.source, SymbolSource::Pclntab);
                assert_eq!(from_stripped.address, sym.address, "{what}: stripped build moved it");
                assert_eq!(from_stripped.size, pcln.size, "{what}");
            }
            assert_eq!(full.binary.function("runtime.noSuchFunction"), None);
            assert_eq!(stripped.binary.function("runtime.noSuchFunction"), None);
        }
        // cgo: C code comes before Go text, so the pclntab's text start is not `.text`.
        let cgo = find(&built, &go, Variant::Cgo);
        for name in FUNCTIONS {
            let sym = cgo.binary.symtab_function(name).unwrap();
            let pcln = cgo.binary.pclntab_function(name).unwrap();
            assert_eq!(sym.address, pcln.address, "{} cgo {name}", go.version);
        }
        // Stripped cgo PIE: found without symbols (by section, or by header scan before 1.26).
        let cgo_pie = find(&built, &go, Variant::CgoPieStripped);
        for name in FUNCTIONS {
            let f = cgo_pie
                .binary
                .function(name)
                .unwrap_or_else(|| panic!("{} cgo pie {name}", go.version));
            assert_eq!(f.source, SymbolSource::Pclntab);
            assert!(cgo_pie.binary.file_offset(f.address).is_ok());
        }
    }
}

#[test]
fn file_offsets_point_at_the_function_bytes() {
    for b in build_all() {
        let file = std::fs::read(&b.path).unwrap();
        for name in FUNCTIONS {
            let what = format!("{} {:?} {name}", b.go.version, b.variant);
            let f = b.binary.function(name).unwrap_or_else(|| panic!("{what}: not found"));
            let offset = b.binary.file_offset(f.address).unwrap_or_else(|e| panic!("{what}: {e}"));
            let expected = section_bytes(&b.path, f.address, 32);
            assert_eq!(&file[offset as usize..offset as usize + 32], &expected[..], "{what}");
            assert_eq!(&b.binary.function_code(&f).unwrap()[..32], &expected[..], "{what}");
        }
        // Data is not code.
        let buildinfo_check = b.binary.file_offset(0);
        assert!(buildinfo_check.is_err());
    }
}

#[test]
fn entry_probe_is_the_emulated_stack_check_branch() {
    for b in build_all() {
        let file = std::fs::read(&b.path).unwrap();
        let address_of = |names: &[&str]| -> Vec<u64> {
            names.iter().flat_map(|n| b.binary.functions_named(n)).map(|f| f.address).collect()
        };
        // ABI0 functions: `.symtab` names end in `.abi0`, pclntab names do not.
        let morestack = address_of(&[
            "runtime.morestack_noctxt",
            "runtime.morestack_noctxt.abi0",
            "runtime.morestack",
            "runtime.morestack.abi0",
        ]);
        let morestackc = address_of(&["runtime.morestackc", "runtime.morestackc.abi0"]);
        assert!(!morestack.is_empty() && !morestackc.is_empty());
        for name in FUNCTIONS {
            let what = format!("{} {:?} {name}", b.go.version, b.variant);
            let f = b.binary.function(name).unwrap();
            let entry = b.binary.entry_probe_offset(&f).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(entry.point.address > f.address, "{what}: probe on the first byte");
            assert!(entry.point.address < f.address + 32, "{what}: too far in: {entry:?}");
            assert_eq!(Ok(entry.point.file_offset), b.binary.file_offset(entry.point.address));
            let branch = decode_in_file(&file, entry.point.file_offset, entry.point.address);
            assert!(branch.is_jcc_short_or_near(), "{what}: {:?}", branch.code());
            assert!(is_kernel_emulated(&branch), "{what}");
            assert_eq!(branch.near_branch_target(), entry.morestack_address);

            // The morestack block spills register arguments, calls morestack, jumps back.
            assert!(
                entry.morestack_address > entry.point.address
                    && entry.morestack_address < f.address + f.size
            );
            let block_offset = b.binary.file_offset(entry.morestack_address).unwrap() as usize;
            let block = &file[block_offset..block_offset + 96];
            let mut decoder = iced_x86::Decoder::with_ip(64, block, entry.morestack_address, 0);
            let call = decoder
                .iter()
                .take(16)
                .find(|i| i.is_call_near())
                .unwrap_or_else(|| panic!("{what}: no call in the morestack block"));
            let expected = if entry.system_stack { &morestackc } else { &morestack };
            assert!(
                expected.contains(&call.near_branch_target()),
                "{what}: morestack block calls {:#x} (system stack: {})",
                call.near_branch_target(),
                entry.system_stack
            );
            let callee =
                b.binary.function_at(call.near_branch_target()).expect("callee in pclntab");
            assert!(callee.name.starts_with("runtime.morestack"), "{what}: calls {callee:?}");
            assert_eq!(callee.address, call.near_branch_target());

            // The first instruction (the stack check itself) is what we avoid.
            let first = decode_in_file(&file, b.binary.file_offset(f.address).unwrap(), f.address);
            assert!(!is_kernel_emulated(&first), "{what}: {:?}", first.code());
        }
    }
}

#[test]
fn every_return_probe_is_a_ret() {
    for b in build_all() {
        let file = std::fs::read(&b.path).unwrap();
        for name in FUNCTIONS {
            let what = format!("{} {:?} {name}", b.go.version, b.variant);
            let f = b.binary.function(name).unwrap();
            let returns = b.binary.return_offsets(&f).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(!returns.is_empty(), "{what}: no RET");
            for point in &returns {
                assert!(point.address >= f.address && point.address < f.address + f.size, "{what}");
                let instruction = decode_in_file(&file, point.file_offset, point.address);
                assert!(
                    is_return(&instruction),
                    "{what}: {:#x} is {:?}",
                    point.address,
                    instruction.code()
                );
            }
        }
    }
}

/// Prints the numbers worth knowing per version (run with `--nocapture`).
#[test]
fn report_attach_points() {
    for b in build_all() {
        for name in ["runtime.gcStart", "runtime.stopTheWorldWithSema"] {
            let f = b.binary.function(name).unwrap();
            let entry = b.binary.entry_probe_offset(&f).unwrap();
            let returns = b.binary.return_offsets(&f).unwrap();
            eprintln!(
                "{} {:?} {name}: at {:#x} size {} entry branch +{} morestack +{} \
                 system stack {} RETs {}",
                b.go.version,
                b.variant,
                f.address,
                f.size,
                entry.point.address - f.address,
                entry.morestack_address - f.address,
                entry.system_stack,
                returns.len()
            );
        }
    }
}

#[test]
fn non_go_executables_are_not_go() {
    // This test binary (Rust) is an x86-64 ELF with no Go sections.
    for path in [Path::new("/proc/self/exe"), Path::new("/bin/sleep")] {
        if path == Path::new("/bin/sleep") && !path.exists() {
            continue;
        }
        match GoBinary::open(path) {
            Err(TargetError::NotGo { .. }) => {}
            other => panic!("{}: expected NotGo, got {other:?}", path.display()),
        }
    }
}

#[test]
fn text_empty_and_missing_files_are_errors() {
    let dir = std::env::temp_dir().join(format!("golens-target-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.txt");
    std::fs::write(&text, "just some text\n").unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(GoBinary::open(&text), Err(TargetError::Elf { .. })));
    assert!(matches!(GoBinary::open(&empty), Err(TargetError::Elf { .. })));
    assert!(matches!(GoBinary::open(&dir.join("missing")), Err(TargetError::Io { .. })));
    let err = GoBinary::open(&text).unwrap_err().to_string();
    assert!(err.contains("notes.txt") && err.contains("no ELF magic"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_and_corrupted_go_binaries_never_panic() {
    let go = &GoToolchain::from_env()[0];
    let dir = std::env::temp_dir().join(format!("golens-target-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for variant in [Variant::Stripped, Variant::CgoPieStripped] {
        let original = std::fs::read(go.build(variant)).unwrap();
        let path = dir.join("cut");
        let step = original.len() / 7;
        let mut lengths: Vec<usize> = (1..7).map(|i| i * step).collect();
        lengths.extend([1, 63, 64, 65, 4096, original.len() - 1]);
        for len in lengths {
            std::fs::write(&path, &original[..len]).unwrap();
            if let Ok(binary) = GoBinary::open(&path) {
                if let Some(f) = binary.function("runtime.gcStart") {
                    let _ = binary.entry_probe_offset(&f);
                    let _ = binary.return_offsets(&f);
                }
            }
        }
        // Overwrite stretches of the file with 0xff, including the headers and the pclntab.
        let step = original.len() / 40;
        for i in 0..40 {
            let mut corrupt = original.clone();
            let at = i * step;
            corrupt[at..(at + 256).min(original.len())].fill(0xff);
            std::fs::write(&path, &corrupt).unwrap();
            if let Ok(binary) = GoBinary::open(&path) {
                for name in FUNCTIONS {
                    if let Some(f) = binary.function(name) {
                        let _ = binary.entry_probe_offset(&f);
                        let _ = binary.return_offsets(&f);
                    }
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn deleted_binary_read_through_proc_pid_exe() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let go = &GoToolchain::from_env()[0];
    let dir = std::env::temp_dir().join(format!("golens-target-deleted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("service");
    std::fs::copy(go.build(Variant::Stripped), &copy).unwrap();
    let mut child = Command::new(&copy).arg("sleep").stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    std::fs::remove_file(&copy).unwrap();

    let exe = PathBuf::from(format!("/proc/{}/exe", child.id()));
    let opened = GoBinary::open(&exe);
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let binary = opened.unwrap();
    assert_eq!(binary.path(), exe);
    assert_eq!(binary.go_version.as_deref(), Some(go.version.as_str()));
    assert!(binary.stripped);
    assert!(binary.function("runtime.gcStart").is_some());
}

/// Every Go function of `.symtab` is found at the same address through the pclntab alone,
/// including names the pclntab shares with an ABI0 wrapper.
#[test]
fn every_symtab_function_is_found_in_the_pclntab() {
    use object::ObjectSymbol;
    let built = build_all();
    for b in built.iter().filter(|b| matches!(b.variant, Variant::Default | Variant::Cgo)) {
        let data = std::fs::read(&b.path).unwrap();
        let elf = ElfFile64::<LittleEndian>::parse(&*data).unwrap();
        let mut checked = 0;
        let mut mismatches = Vec::new();
        for symbol in elf.symbols() {
            let Ok(name) = symbol.name() else { continue };
            // Go functions only: C functions of cgo builds and linker markers are not in the
            // pclntab; `.abi0` symbols are the pclntab's same-named wrappers; the pclntab
            // shortens array lengths and generic shapes to `[...]` and spells the suffix of
            // some generated `type:.eq.*` functions with `·`.
            let go_func = symbol.kind() == object::SymbolKind::Text
                && symbol.size() > 0
                && name.contains('.')
                && !name.contains('[')
                && !name.starts_with("type:")
                && !name.starts_with("type..")
                && !name.ends_with(".abi0")
                && !name.starts_with('_')
                && !name.starts_with("x_cgo")
                && !name.starts_with("crosscall");
            if !go_func {
                continue;
            }
            checked += 1;
            match b.binary.pclntab_function(name) {
                Some(f) if f.address == symbol.address() => {}
                other => {
                    mismatches.push(format!("{name} at {:#x}: pclntab {other:?}", symbol.address()))
                }
            }
        }
        assert!(checked > 1000, "{} {:?}: only {checked} functions", b.go.version, b.variant);
        assert!(
            mismatches.is_empty(),
            "{} {:?}: {checked} checked, mismatches:\n{}",
            b.go.version,
            b.variant,
            mismatches.join("\n")
        );
    }
}

/// `runtime.gomaxprocs`, on every toolchain and build variant:
/// - where `.symtab` exists, decoding gives its address, and each reader on its own does
///   (the pattern holds for every version, not just the agreement of two readers);
/// - on every variant, stripped ones included, the address found (decoded without
///   `.symtab`), plus the process's load bias, holds the running process's GOMAXPROCS:
///   read through `/proc/PID/mem` from a child started with `GOMAXPROCS=7`. (A stripped
///   build's data is not laid out like its unstripped twin's: Go 1.19 moves it by 32
///   bytes, so the running process is the reference, not the twin's `.symtab`.)
#[test]
fn gomaxprocs_address_is_the_symtab_one_and_holds_the_running_value() {
    use super::runtime_variables::{first_rip_relative_load32, GOMAXPROCS};
    use crate::pressure::runtime_memory::{load_bias, read_i32};
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    for go in GoToolchain::from_env() {
        for variant in Variant::ALL {
            let what = format!("{} {variant:?}", go.version);
            let path = go.build(variant);
            let binary = GoBinary::open(&path).unwrap();
            let found = binary.gomaxprocs_variable().unwrap_or_else(|e| panic!("{what}: {e}"));
            if variant.stripped() {
                assert_eq!(found.found_by, FoundBy::Decoded, "{what}");
            } else {
                assert_eq!(found.found_by, FoundBy::Symtab, "{what}");
                assert_eq!(binary.decoded_variable(&GOMAXPROCS), Ok(found.address), "{what}");
                for reader in GOMAXPROCS.readers {
                    let function = binary.function(reader).expect(reader);
                    let code = binary.function_code(&function).unwrap();
                    assert_eq!(
                        first_rip_relative_load32(code, function.address),
                        Ok(found.address),
                        "{what} {reader}"
                    );
                }
            }

            let mut child = Command::new(&path)
                .arg("sleep")
                .env("GOMAXPROCS", "7")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let child_guard = KillOnDrop(child.id());
            let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let ready = lines.map_while(Result::ok).any(|line| line == "ready");
            assert!(ready, "{what}: the program never said ready");
            let bias = load_bias(child.id(), binary.pie, binary.entry_address()).unwrap();
            assert_eq!(bias == 0, !binary.pie, "{what}: bias {bias:#x}");
            let value = read_i32(child.id(), found.address + bias).unwrap();
            assert_eq!(value, 7, "{what}: runtime.gomaxprocs at {:#x}", found.address);
            drop(child_guard);
            let _ = child.wait();
        }
    }
}

/// Kills a child by pid when dropped (also when an assertion fails).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a child this test started and has not reaped yet.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}
