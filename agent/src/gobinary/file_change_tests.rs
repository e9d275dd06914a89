//! A binary's file changing under golens: truncated after `open` (a deploy rewriting it in
//! place), truncated before it, shrinking between two reads. golens must answer from what it
//! read, or return an error; it must never die (a shared mapping of a truncated file raises
//! SIGBUS on the first touch past the new end).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use super::classify::{self, ClassifyError, Verdict};
use super::elf;
use super::file_reader::FileReader;
use super::go_toolchain::{GoToolchain, Variant};
use super::*;

/// Functions the probe plan needs, plus one of the program's own.
const FUNCTIONS: [&str; 4] = [
    "runtime.gcStart",
    "runtime.stopTheWorldWithSema",
    "runtime.startTheWorldWithSema",
    "main.main",
];

/// A private directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("golens-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A writable copy of `original` in this directory.
    fn copy(&self, original: &Path, name: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::copy(original, &path).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

/// Every query golens makes on an opened binary, as text: two binaries answering the same
/// give the same text.
fn every_query(binary: &GoBinary) -> String {
    let mut answers = format!(
        "{:?} {:?} {} {} {:?}\n",
        binary.go_version,
        binary.module_path,
        binary.stripped,
        binary.pie,
        binary.pclntab_version()
    );
    let gc_start = binary.function("runtime.gcStart");
    for name in FUNCTIONS {
        let function = binary.function(name);
        answers += &format!(
            "{name}: {function:?} symtab {:?} pclntab {:?} named {:?}\n",
            binary.symtab_function(name),
            binary.pclntab_function(name),
            binary.functions_named(name)
        );
        let Some(function) = function else { continue };
        answers += &format!(
            "  at {:?} offset {:?} code {:?}\n  entry {:?}\n  returns {:?}\n",
            binary.function_at(function.address),
            binary.file_offset(function.address),
            binary.function_code(&function).map(<[u8]>::len),
            binary.entry_probe_offset(&function),
            binary.return_offsets(&function)
        );
        if let Some(gc_start) = &gc_start {
            answers += &format!("  calls gcStart {:?}\n", binary.call_sites(&function, gc_start));
        }
    }
    answers += &format!("gomaxprocs {:?}\n", binary.gomaxprocs_variable());
    answers
        + &format!(
            "{:?}",
            crate::goruntime::plan::plan(binary, crate::goruntime::UprobeFamily::ALL)
        )
}

/// The old code mapped the file shared: after a truncation every one of these queries
/// touched pages past the end and the process died of SIGBUS. Now they answer from the copy
/// read at `open`, exactly as before the truncation.
#[test]
fn binary_truncated_after_open_still_answers() {
    let scratch = Scratch::new("truncated-after-open");
    let go = &GoToolchain::from_env()[0];
    for variant in [Variant::Default, Variant::CgoPieStripped] {
        let original = go.build(variant);
        let expected = every_query(&GoBinary::open(&original).unwrap());
        assert!(expected.contains("runtime.gcStart: Some"), "{variant:?}: {expected}");
        let full_len = std::fs::metadata(&original).unwrap().len();
        for cut_to in [0, full_len / 2] {
            let path = scratch.copy(&original, "service");
            let binary = GoBinary::open(&path).unwrap();
            truncate(&path, cut_to);
            let what = format!("{} {variant:?} cut to {cut_to}", go.version);
            assert_eq!(every_query(&binary), expected, "{what}");
            // Reopening the cut file is an error, not a crash. (Go's own linker writes the
            // section headers at the start, so half a file may parse with its Go sections
            // past the end: not Go.)
            match GoBinary::open(&path) {
                Err(TargetError::Elf { .. } | TargetError::NotGo { .. }) => {}
                other => panic!("{what}: reopened: {other:?}"),
            }
        }
    }
}

/// An externally linked binary (section headers at the end, as GNU ld writes them) cut
/// before it is opened: the headers point past the end of the file. An error, no panic.
#[test]
fn binary_truncated_before_open_is_an_error() {
    let scratch = Scratch::new("truncated-before-open");
    let go = &GoToolchain::from_env()[0];
    let original = go.build(Variant::CgoPieStripped);
    let full_len = std::fs::metadata(&original).unwrap().len();
    for cut_to in [0, 1, 63, 64, 4096, full_len / 2, full_len - 1] {
        let path = scratch.copy(&original, "service");
        truncate(&path, cut_to);
        match GoBinary::open(&path) {
            Err(TargetError::Elf { reason, .. }) => {
                // Past the ELF header: the program or section header table is cut.
                if cut_to >= 64 {
                    assert!(reason.contains(" headers: "), "cut to {cut_to}: {reason}");
                }
            }
            other => panic!("cut to {cut_to}: {other:?}"),
        }
    }
}

/// The file shrinks between `open` (which takes its size) and the reads: an I/O error that
/// says so, whether the reads that fail are the headers' or the whole file's.
#[test]
fn binary_shrinking_while_being_read_is_an_io_error() {
    let scratch = Scratch::new("shrinking");
    let go = &GoToolchain::from_env()[0];
    // Default: Go's linker puts the headers at the start, so only the whole-file read fails.
    // CgoPieStripped: the section headers at the end fail already.
    for variant in [Variant::Default, Variant::CgoPieStripped] {
        let original = go.build(variant);
        let full_len = std::fs::metadata(&original).unwrap().len();
        for cut_to in [0, full_len / 2, full_len - 1] {
            let path = scratch.copy(&original, "service");
            let reader = FileReader::open(&path).unwrap();
            truncate(&path, cut_to);
            match GoBinary::from_reader(&path, &reader) {
                Err(TargetError::Io { source, .. }) => {
                    assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof, "{source}");
                    assert!(source.to_string().contains("shrank"), "{source}");
                }
                other => panic!("{variant:?} cut to {cut_to}: {other:?}"),
            }
        }
    }
}

/// Every build variant is judged Go from its headers, reading a few KiB.
#[test]
fn go_binaries_are_recognised_from_their_headers() {
    for go in GoToolchain::from_env() {
        for variant in Variant::ALL {
            let reader = FileReader::open(&go.build(variant)).unwrap();
            let verdict = classify::classify(&reader).unwrap();
            let what = format!("{} {variant:?}: {} bytes read", go.version, reader.bytes_read());
            assert_eq!(verdict, Verdict::Go, "{what}");
            assert!(reader.bytes_read() < 64 * 1024, "{what}");
            eprintln!("{what} to classify a {} byte file", reader.len());
        }
    }
}

/// A non-Go executable of 256 MiB (sparse: no disk used) with its section headers at the
/// end, as GNU ld and lld write them: rejected after reading its headers only.
#[test]
fn large_non_go_file_is_rejected_from_its_headers() {
    let scratch = Scratch::new("large-non-go");
    let path = scratch.0.join("big");
    let len = 256 << 20;
    synthetic_elf(&path, len, &[(".rodata", SHT_PROGBITS, &[1; 64]), (".data", SHT_PROGBITS, &[])]);
    let reader = FileReader::open(&path).unwrap();
    assert!(matches!(GoBinary::from_reader(&path, &reader), Err(TargetError::NotGo { .. })));
    eprintln!("NotGo after reading {} bytes of {len}", reader.bytes_read());
    assert!(reader.bytes_read() < 1 << 20, "{} bytes read", reader.bytes_read());
}

/// A non-stripped non-Go binary also costs its symbol string table, and no more: the
/// symbols that would make it Go can only be there if their names are. This test binary is
/// one (Rust, with `.symtab`).
#[test]
fn non_stripped_non_go_file_costs_its_symbol_names_only() {
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let reader = FileReader::open(&exe).unwrap();
    assert!(matches!(GoBinary::from_reader(&exe, &reader), Err(TargetError::NotGo { .. })));
    let names = std::fs::read(&exe).ok().and_then(|d| elf::symtab_names(&d[..])).unwrap();
    let names_len = names.end - names.start;
    eprintln!(
        "{}: NotGo after reading {} bytes of {} ({names_len} of them symbol names)",
        exe.display(),
        reader.bytes_read(),
        reader.len()
    );
    assert!(reader.bytes_read() < names_len + (1 << 20), "{} bytes read", reader.bytes_read());
}

/// Synthetic files exercising each way the headers decide, each checked against the whole
/// file's parse.
#[test]
fn each_header_test_decides_as_the_whole_file_would() {
    let scratch = Scratch::new("header-tests");
    let path = scratch.0.join("synthetic");
    let mut buildinfo = b"\xff Go buildinf:\x08\x02".to_vec();
    buildinfo.resize(32, 0);
    buildinfo.extend_from_slice(b"\x09go1.21.13\x00");
    let pclntab_names: &[u8] = b"\0main.main\0runtime.pclntab\0runtime.epclntab\0";
    let other_names: &[u8] = b"\0main\0_start\0";
    let null_symbol = [0u8; 24];
    let cases: [(&str, Vec<Section>, Verdict); 6] = [
        ("build info", vec![(".go.buildinfo", SHT_PROGBITS, &buildinfo)], Verdict::Go),
        ("no magic", vec![(".go.buildinfo", SHT_PROGBITS, &[0; 64])], Verdict::NotGo),
        ("pclntab section", vec![(".gopclntab", SHT_PROGBITS, &[])], Verdict::Go),
        ("pie pclntab", vec![(".data.rel.ro.gopclntab", SHT_PROGBITS, &[])], Verdict::Go),
        (
            "pclntab symbol names",
            vec![(".symtab", SHT_SYMTAB, &null_symbol), (".strtab", SHT_STRTAB, pclntab_names)],
            Verdict::WholeFileDecides,
        ),
        (
            "other symbol names",
            vec![(".symtab", SHT_SYMTAB, &null_symbol), (".strtab", SHT_STRTAB, other_names)],
            Verdict::NotGo,
        ),
    ];
    for (what, sections, expected) in cases {
        synthetic_elf(&path, 1 << 20, &sections);
        let reader = FileReader::open(&path).unwrap();
        assert_eq!(classify::classify(&reader).unwrap(), expected, "{what}");
        let whole = GoBinary::from_bytes(&path, std::fs::read(&path).unwrap());
        match expected {
            Verdict::Go => assert!(whole.is_ok(), "{what}: {whole:?}"),
            Verdict::NotGo => assert!(matches!(whole, Err(TargetError::NotGo { .. })), "{what}"),
            // Named but not defined (one null symbol): the whole file says not Go.
            Verdict::WholeFileDecides => {
                assert!(matches!(whole, Err(TargetError::NotGo { .. })), "{what}")
            }
        }
        let opened = GoBinary::open(&path);
        assert_eq!(opened.is_ok(), whole.is_ok(), "{what}: {opened:?}");
    }
    let binary = GoBinary::from_bytes(&path, {
        synthetic_elf(&path, 1 << 20, &[(".go.buildinfo", SHT_PROGBITS, &buildinfo)]);
        std::fs::read(&path).unwrap()
    })
    .unwrap();
    assert_eq!(binary.go_version.as_deref(), Some("go1.21.13"));
}

/// The headers never contradict the whole file: on real binaries, Go and not, and on Go
/// binaries cut short or with stretches overwritten, a verdict from the headers is the one
/// `GoBinary::parse` gives on the whole file (and an ELF error is the same error).
#[test]
fn header_verdicts_match_the_whole_file_parse() {
    let scratch = Scratch::new("verdicts");
    let go = &GoToolchain::from_env()[0];
    let mut files: Vec<Vec<u8>> = vec![std::fs::read("/proc/self/exe").unwrap()];
    for system in ["/bin/sh", "/bin/sleep", "/usr/bin/env"] {
        files.extend(std::fs::read(system).ok());
    }
    for variant in [Variant::Default, Variant::Stripped, Variant::CgoPieStripped] {
        let original = std::fs::read(go.build(variant)).unwrap();
        let step = original.len() / 40;
        for i in 0..40 {
            let mut corrupt = original.clone();
            corrupt[i * step..(i * step + 256).min(original.len())].fill(0xff);
            files.push(corrupt);
        }
        for cut in [64, 4096, original.len() / 2, original.len() - 1] {
            files.push(original[..cut].to_vec());
        }
        files.push(original);
    }
    let path = scratch.0.join("file");
    let mut verdicts = std::collections::BTreeMap::new();
    for (index, contents) in files.into_iter().enumerate() {
        std::fs::write(&path, &contents).unwrap();
        let reader = FileReader::open(&path).unwrap();
        let verdict = classify::classify(&reader);
        let whole = GoBinary::from_bytes(&path, contents);
        let what = format!("file {index}: headers {verdict:?}, whole file {whole:?}");
        match (&verdict, &whole) {
            (Ok(Verdict::Go), Ok(_))
            | (Ok(Verdict::NotGo), Err(TargetError::NotGo { .. }))
            | (Ok(Verdict::WholeFileDecides), _) => {}
            (Err(ClassifyError::Elf(from_headers)), Err(TargetError::Elf { reason, .. })) => {
                assert_eq!(from_headers, reason, "{what}")
            }
            _ => panic!("{what}"),
        }
        *verdicts
            .entry(format!("{verdict:?}").chars().take(12).collect::<String>())
            .or_insert(0) += 1;
    }
    eprintln!("verdicts: {verdicts:?}");
}

/// A section of `synthetic_elf`: name, type, contents.
type Section<'a> = (&'a str, u32, &'a [u8]);

const SHT_PROGBITS: u32 = object::elf::SHT_PROGBITS;
const SHT_SYMTAB: u32 = object::elf::SHT_SYMTAB;
const SHT_STRTAB: u32 = object::elf::SHT_STRTAB;

/// Writes a minimal x86-64 executable of `len` bytes: the ELF header and one executable
/// `PT_LOAD` at the start, then zeros (a hole: no disk used), then at the end each section's
/// bytes, the section names and the section header table. A `.symtab` is linked to the
/// `.strtab`.
fn synthetic_elf(path: &Path, len: u64, sections: &[Section]) {
    let mut tail = Vec::new();
    let mut shstrtab = b"\0".to_vec();
    let mut headers = vec![[0u8; 64]]; // section 0
    let tail_start = len - 64 * 1024;
    let strtab_index = sections.iter().position(|s| s.0 == ".strtab").map_or(0, |i| i + 1);
    for (name, sh_type, bytes) in sections {
        let link = if *sh_type == SHT_SYMTAB { strtab_index as u32 } else { 0 };
        let entsize = if *sh_type == SHT_SYMTAB { 24 } else { 0 };
        let offset = tail_start + tail.len() as u64;
        headers.push(section_header(
            shstrtab.len() as u32,
            *sh_type,
            offset,
            bytes.len(),
            link,
            entsize,
        ));
        shstrtab.extend_from_slice(name.as_bytes());
        shstrtab.push(0);
        tail.extend_from_slice(bytes);
        tail.resize(tail.len().next_multiple_of(8), 0);
    }
    let shstrtab_name = shstrtab.len() as u32;
    shstrtab.extend_from_slice(b".shstrtab\0");
    let offset = tail_start + tail.len() as u64;
    headers.push(section_header(shstrtab_name, SHT_STRTAB, offset, shstrtab.len(), 0, 0));
    tail.extend_from_slice(&shstrtab);
    tail.resize(tail.len().next_multiple_of(8), 0);
    let shoff = tail_start + tail.len() as u64;
    for header in &headers {
        tail.extend_from_slice(header);
    }

    let mut start = Vec::new();
    start.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    start.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    start.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    start.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    start.extend_from_slice(&0x401000u64.to_le_bytes()); // entry
    start.extend_from_slice(&64u64.to_le_bytes()); // phoff
    start.extend_from_slice(&shoff.to_le_bytes());
    start.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [64u16, 56, 1, 64, headers.len() as u16, headers.len() as u16 - 1] {
        // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        start.extend_from_slice(&half.to_le_bytes());
    }
    // PT_LOAD, R+X, the first page.
    start.extend_from_slice(&1u32.to_le_bytes());
    start.extend_from_slice(&5u32.to_le_bytes());
    for word in [0u64, 0x400000, 0x400000, 0x1000, 0x1000, 0x1000] {
        // offset, vaddr, paddr, filesz, memsz, align
        start.extend_from_slice(&word.to_le_bytes());
    }

    let file = std::fs::File::create(path).unwrap();
    file.set_len(len).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(&start, 0).unwrap();
    file.write_all_at(&tail, tail_start).unwrap();
}

fn section_header(
    name: u32,
    sh_type: u32,
    offset: u64,
    size: usize,
    link: u32,
    entsize: u64,
) -> [u8; 64] {
    let mut header = [0u8; 64];
    header[0..4].copy_from_slice(&name.to_le_bytes());
    header[4..8].copy_from_slice(&sh_type.to_le_bytes());
    header[24..32].copy_from_slice(&offset.to_le_bytes());
    header[32..40].copy_from_slice(&(size as u64).to_le_bytes());
    header[40..44].copy_from_slice(&link.to_le_bytes());
    header[48..56].copy_from_slice(&1u64.to_le_bytes()); // addralign
    header[56..64].copy_from_slice(&entsize.to_le_bytes());
    header
}
