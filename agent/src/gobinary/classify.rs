//! Is a file Go? Decided from its headers with a few small reads, so that the many non-Go
//! executables a host runs (shells, coreutils, large C++ or Rust programs) cost a few KiB of
//! reading each, not their size.
//!
//! The definition of Go is `GoBinary::parse`'s, on the whole file: build info in
//! `.go.buildinfo`, or a section named `.gopclntab` / `.data.rel.ro.gopclntab`, or a pclntab
//! located through the `.symtab` symbols `runtime.pclntab`/`runtime.epclntab`. (The scan of
//! `.data.rel.ro` for a pclntab header, and Go 1.26's text start from moduledata, are only
//! tried once build info has already said Go.) Here each test is either decided from the
//! headers or left to the whole file, never guessed:
//!
//! - a pclntab section name: Go, from the section names alone;
//! - `.go.buildinfo`: Go when its magic is there (the section is a few KiB);
//! - `.symtab`: the symbols can exist only if their names are in the symbol string table, so
//!   that table is searched (streamed, not kept); found, the whole file decides. This is the
//!   one cost that grows with the file, and only for non-stripped non-Go binaries: their
//!   string table (about 5% of an unstripped Rust binary), once per file identity, since
//!   discovery caches the answer.

use std::io;
use std::ops::Range;

use object::read::ReadCache;

use super::buildinfo;
use super::elf::{self, ElfLayout};
use super::file_reader::FileReader;

/// Sections whose name alone makes a file Go (`GoBinary::parse` accepts them by name).
pub(crate) const PCLNTAB_SECTIONS: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

/// A `.go.buildinfo` larger than this is not read here (a real one is a few KiB; the modinfo
/// of a large program a few tens): the whole file decides.
const MAX_BUILDINFO_READ: u64 = 1 << 20;

/// The `.symtab` names that locate a pclntab, each as it must end in the string table:
/// followed by the NUL that ends it (a longer name may share the tail: `xruntime.pclntab`).
const PCLNTAB_SYMBOL_NAMES: [&[u8]; 2] = [b"runtime.pclntab\0", b"runtime.epclntab\0"];

/// How much of a symbol string table is read at a time.
const STRING_TABLE_CHUNK: usize = 256 * 1024;

/// What the headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Go,
    /// Nothing that makes a file Go can be in it.
    NotGo,
    /// Only the whole file can tell (see the module comment).
    WholeFileDecides,
}

/// Why the headers could not be judged.
#[derive(Debug)]
pub(crate) enum ClassifyError {
    /// Not an ELF executable golens reads: a reason for `TargetError::Elf`.
    Elf(String),
    /// A read failed (the file shrank, or an I/O error).
    Io(io::Error),
}

/// Judges the file behind `reader` from its headers.
pub(crate) fn classify(reader: &FileReader) -> Result<Verdict, ClassifyError> {
    let cache = ReadCache::new(reader);
    let layout = match ElfLayout::parse(&cache) {
        Ok(layout) => layout,
        // A parse that failed because a read failed is an I/O error, not a bad ELF.
        Err(reason) => {
            return Err(reader.take_error().map_or(ClassifyError::Elf(reason), ClassifyError::Io))
        }
    };
    if PCLNTAB_SECTIONS.iter().any(|name| layout.section(name).is_some()) {
        return Ok(Verdict::Go);
    }
    if let Some(section) = layout.section(".go.buildinfo") {
        let range = section.file_range.clone();
        if range.len() as u64 > MAX_BUILDINFO_READ {
            return Ok(Verdict::WholeFileDecides);
        }
        let bytes = reader.read_at(range.start as u64, range.len()).map_err(ClassifyError::Io)?;
        if buildinfo::is_present(&bytes) {
            return Ok(Verdict::Go);
        }
    }
    if layout.has_symtab {
        if let Some(names) = elf::symtab_names(&cache) {
            if names_pclntab_symbols(reader, names).map_err(ClassifyError::Io)? {
                return Ok(Verdict::WholeFileDecides);
            }
        }
    }
    if let Some(error) = reader.take_error() {
        return Err(ClassifyError::Io(error));
    }
    Ok(Verdict::NotGo)
}

/// Whether the string table at `range` holds both pclntab symbol names. Streamed in chunks;
/// the tail of each chunk is carried over so that a name split between two is still seen.
fn names_pclntab_symbols(reader: &FileReader, range: Range<u64>) -> io::Result<bool> {
    let longest = PCLNTAB_SYMBOL_NAMES.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut found = [false; PCLNTAB_SYMBOL_NAMES.len()];
    let mut window: Vec<u8> = Vec::new();
    let mut offset = range.start;
    while offset < range.end && !found.iter().all(|&f| f) {
        let chunk_len = (range.end - offset).min(STRING_TABLE_CHUNK as u64) as usize;
        let carried = window.len();
        window.extend(reader.read_at(offset, chunk_len)?);
        // A NUL in the carried tail was looked at with the chunk before.
        for end in (carried..window.len()).filter(|&i| window[i] == 0) {
            let name = &window[..=end];
            for (found, wanted) in found.iter_mut().zip(PCLNTAB_SYMBOL_NAMES) {
                *found |= name.ends_with(wanted);
            }
        }
        window.drain(..window.len().saturating_sub(longest - 1));
        offset += chunk_len as u64;
    }
    Ok(found.iter().all(|&f| f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader_over(name: &str, contents: &[u8]) -> (FileReader, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("golens-{name}-{}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        (FileReader::open(&path).unwrap(), path)
    }

    #[test]
    fn pclntab_names_are_found_across_chunk_boundaries() {
        for split_at in [0, 1, 8, 15, 16, 17, 30] {
            // Padding puts the names at every position relative to a chunk boundary.
            let mut table = vec![b'x'; STRING_TABLE_CHUNK - split_at];
            table.extend_from_slice(b"\0runtime.pclntab\0main.main\0runtime.epclntab\0");
            let (reader, path) = reader_over("strtab-split", &table);
            let all = 0..table.len() as u64;
            assert!(names_pclntab_symbols(&reader, all).unwrap(), "split at {split_at}");
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn pclntab_names_must_be_whole_names_and_both_present() {
        for (table, expected) in [
            (&b"\0runtime.pclntab\0runtime.epclntab\0"[..], true),
            // Tail-merged: `runtime.pclntab` is the end of a longer string.
            (b"\0xruntime.pclntab\0runtime.epclntab\0", true),
            (b"\0runtime.pclntab\0", false),
            (b"\0runtime.pclntabs\0runtime.epclntab\0", false),
            (b"\0runtime.pclntab\0runtime.epclntab", false),
            (b"", false),
        ] {
            let (reader, path) = reader_over("strtab-names", table);
            let all = 0..table.len() as u64;
            assert_eq!(names_pclntab_symbols(&reader, all).unwrap(), expected, "{table:?}");
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn text_and_tiny_files_are_elf_errors() {
        for contents in [&b"#!/bin/sh\n"[..], b"\x7fELF", b"\x7fELF\x02\x01\x01\0"] {
            let (reader, path) = reader_over("classify-tiny", contents);
            assert!(matches!(classify(&reader), Err(ClassifyError::Elf(_))), "{contents:?}");
            std::fs::remove_file(&path).unwrap();
        }
    }
}
