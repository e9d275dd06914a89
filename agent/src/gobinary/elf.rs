//! The ELF facts golens needs from an executable: its loadable segments (to turn a virtual
//! address into a file offset, which is what a uprobe is attached at) and where its sections
//! are. Only 64-bit little-endian x86-64 executables are accepted: that is the only target the
//! probes and the register ABI decoding are written for.
//!
//! `ElfLayout::parse` reads through `object::ReadRef`: the whole file in memory (`&[u8]`), or
//! a `FileReader` behind an `object::ReadCache`, which reads only the header, the program and
//! section header tables and the section names (how a non-Go file is rejected cheaply). The
//! other functions work on the file's bytes in memory.

use std::ops::Range;

use object::elf::{
    EM_X86_64, ET_DYN, ET_EXEC, PF_W, PF_X, PT_LOAD, SHT_NOBITS, SHT_STRTAB, SHT_SYMTAB, STT_FUNC,
    STT_OBJECT,
};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, Sym};
use object::{LittleEndian, ReadRef, SectionIndex};

type Header = object::elf::FileHeader64<LittleEndian>;

/// One `PT_LOAD` program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoadSegment {
    pub vaddr: u64,
    pub file_offset: u64,
    pub file_size: u64,
    /// Bytes in memory: more than `file_size` when the segment ends with `.bss`.
    pub mem_size: u64,
    pub executable: bool,
    pub writable: bool,
}

/// One section header that has bytes in the file (`SHT_NOBITS` sections are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SectionInfo {
    pub name: String,
    pub vaddr: u64,
    pub file_range: Range<usize>,
}

/// Where a virtual address cannot be turned into file bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address {address:#x} is in no executable PT_LOAD segment")]
    NotExecutable { address: u64 },
    #[error("bytes {address:#x}..+{len:#x} are not all backed by the file")]
    NotInFile { address: u64, len: u64 },
}

/// The parsed layout of an accepted ELF executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ElfLayout {
    /// ELF type ET_DYN.
    pub pie: bool,
    /// A `SHT_SYMTAB` section exists.
    pub has_symtab: bool,
    /// `e_entry`: the entry point's link-time address (a PIE's load bias is
    /// the running entry point, `AT_ENTRY`, minus this).
    pub entry: u64,
    pub segments: Vec<LoadSegment>,
    pub sections: Vec<SectionInfo>,
}

impl ElfLayout {
    /// Checks that `data` is an ELF executable golens can read and records its layout.
    /// The error is a reason for `TargetError::Elf`, written for a person.
    pub fn parse<'d, R: ReadRef<'d>>(data: R) -> Result<ElfLayout, String> {
        let file_len = data.len().map_err(|()| "cannot tell the file's size".to_string())?;
        let file_len = usize::try_from(file_len).map_err(|_| "file too large".to_string())?;
        let ident = data
            .read_bytes_at(0, file_len.min(64) as u64)
            .map_err(|()| "cannot read the ELF header".to_string())?;
        check_ident(ident)?;
        let header = Header::parse(data).map_err(|e| format!("bad ELF header: {e}"))?;
        let endian = LittleEndian;
        let machine = header.e_machine(endian);
        if machine != EM_X86_64 {
            return Err(format!(
                "ELF machine {machine} is not x86-64 (62); golens reads only x86-64 executables"
            ));
        }
        let elf_type = header.e_type(endian);
        if elf_type != ET_EXEC && elf_type != ET_DYN {
            return Err(format!(
                "ELF type {elf_type} is neither an executable (ET_EXEC) nor a PIE (ET_DYN)"
            ));
        }

        let program_headers = header
            .program_headers(endian, data)
            .map_err(|e| format!("bad program headers: {e}"))?;
        let segments: Vec<LoadSegment> = program_headers
            .iter()
            .filter(|ph| ph.p_type(endian) == PT_LOAD)
            .map(|ph| LoadSegment {
                vaddr: ph.p_vaddr(endian),
                file_offset: ph.p_offset(endian),
                file_size: ph.p_filesz(endian),
                mem_size: ph.p_memsz(endian),
                executable: ph.p_flags(endian) & PF_X != 0,
                writable: ph.p_flags(endian) & PF_W != 0,
            })
            .collect();
        if !segments.iter().any(|s| s.executable) {
            return Err("no executable PT_LOAD segment".to_string());
        }

        let table =
            header.sections(endian, data).map_err(|e| format!("bad section headers: {e}"))?;
        let mut sections = Vec::new();
        let mut has_symtab = false;
        for section in table.iter() {
            let sh_type = section.sh_type(endian);
            has_symtab |= sh_type == SHT_SYMTAB;
            if sh_type == SHT_NOBITS {
                continue;
            }
            // Sections with unreadable names or out-of-file ranges are skipped, not fatal:
            // golens only looks a few of them up by name.
            let Ok(name) = table.section_name(endian, section) else {
                continue;
            };
            let Some(file_range) =
                checked_range(section.sh_offset(endian), section.sh_size(endian), file_len)
            else {
                continue;
            };
            sections.push(SectionInfo {
                name: String::from_utf8_lossy(name).into_owned(),
                vaddr: section.sh_addr(endian),
                file_range,
            });
        }

        Ok(ElfLayout {
            pie: elf_type == ET_DYN,
            has_symtab,
            entry: header.e_entry(endian),
            segments,
            sections,
        })
    }

    pub fn section(&self, name: &str) -> Option<&SectionInfo> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// File offset of the code byte at `address`. Only executable segments count: a uprobe
    /// can only be placed on code.
    pub fn code_file_offset(&self, address: u64) -> Result<u64, AddressError> {
        self.segments
            .iter()
            .filter(|s| s.executable)
            .find_map(|s| segment_offset(s, address, 1))
            .ok_or(AddressError::NotExecutable { address })
    }

    /// The file bytes of `len` bytes of code starting at `address`.
    pub fn code_bytes<'d>(
        &self,
        data: &'d [u8],
        address: u64,
        len: u64,
    ) -> Result<&'d [u8], AddressError> {
        self.code_file_offset(address)?;
        self.segments
            .iter()
            .filter(|s| s.executable)
            .find_map(|s| segment_offset(s, address, len))
            .and_then(|offset| checked_range(offset, len, data.len()))
            .map(|range| &data[range])
            .ok_or(AddressError::NotInFile { address, len })
    }

    /// The file bytes of `len` bytes of any loaded segment (code or data) at `address`.
    pub fn loaded_bytes<'d>(&self, data: &'d [u8], address: u64, len: u64) -> Option<&'d [u8]> {
        self.segments
            .iter()
            .find_map(|s| segment_offset(s, address, len))
            .and_then(|offset| checked_range(offset, len, data.len()))
            .map(|range| &data[range])
    }

    /// Whether `address` lies in an executable segment.
    pub fn is_code(&self, address: u64) -> bool {
        self.code_file_offset(address).is_ok()
    }

    /// Whether `[address, address+len)` lies in the memory of one writable,
    /// non-executable segment (`.data`, `.noptrdata`, `.bss`, `.noptrbss`):
    /// where a Go global variable lives.
    pub fn is_writable_data(&self, address: u64, len: u64) -> bool {
        self.segments.iter().filter(|s| s.writable && !s.executable).any(|s| {
            address
                .checked_sub(s.vaddr)
                .and_then(|delta| delta.checked_add(len))
                .is_some_and(|end| end <= s.mem_size)
        })
    }
}

/// `offset = vaddr - p_vaddr + p_offset`, when `[address, address+len)` is inside the
/// segment's file-backed part.
fn segment_offset(segment: &LoadSegment, address: u64, len: u64) -> Option<u64> {
    let delta = address.checked_sub(segment.vaddr)?;
    let end = delta.checked_add(len)?;
    if end > segment.file_size {
        return None;
    }
    segment.file_offset.checked_add(delta)
}

/// `offset..offset+len` as a range into a buffer of `available` bytes, if it fits.
pub(crate) fn checked_range(offset: u64, len: u64, available: usize) -> Option<Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= available).then_some(start..end)
}

/// The e_ident checks, with reasons a person can act on. `data` is the file's first 64 bytes
/// (or all of it, when shorter).
fn check_ident(data: &[u8]) -> Result<(), String> {
    const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
    if data.len() < 4 || &data[..4] != ELF_MAGIC {
        return Err("no ELF magic: not an executable file".to_string());
    }
    if data.len() < 64 {
        return Err(format!("truncated ELF header ({} bytes)", data.len()));
    }
    match data[4] {
        2 => {}
        1 => return Err("32-bit ELF; golens reads only 64-bit x86-64 executables".to_string()),
        other => return Err(format!("unknown ELF class {other}")),
    }
    match data[5] {
        1 => {}
        2 => return Err("big-endian ELF; golens reads only x86-64 executables".to_string()),
        other => return Err(format!("unknown ELF data encoding {other}")),
    }
    Ok(())
}

/// A defined `STT_FUNC` symbol of `.symtab` named `name`: (value, size).
/// Reparses the section and symbol tables (cheap: no copy, a linear scan) so that nothing
/// borrowed from the mmap has to be stored.
pub(crate) fn symtab_function(data: &[u8], name: &str) -> Option<(u64, u64)> {
    symtab_symbol(data, name, Some(STT_FUNC))
}

/// A defined `.symtab` symbol named `name` of any type (`runtime.pclntab` is an object,
/// `runtime.text` a function): (value, size).
pub(crate) fn symtab_symbol(data: &[u8], name: &str, st_type: Option<u8>) -> Option<(u64, u64)> {
    let endian = LittleEndian;
    let header = Header::parse(data).ok()?;
    let table = header.sections(endian, data).ok()?;
    let symbols = table.symbols(endian, data, SHT_SYMTAB).ok()?;
    symbols.iter().find_map(|sym| {
        if sym.st_shndx(endian) == 0 || st_type.is_some_and(|t| sym.st_type() != t) {
            return None;
        }
        let sym_name = symbols.symbol_name(endian, sym).ok()?;
        (sym_name == name.as_bytes()).then(|| (sym.st_value(endian), sym.st_size(endian)))
    })
}

/// A defined `STT_OBJECT` symbol of `.symtab` (a global variable): (value, size).
pub(crate) fn symtab_object(data: &[u8], name: &str) -> Option<(u64, u64)> {
    symtab_symbol(data, name, Some(STT_OBJECT))
}

/// The file range of the string table that names `.symtab`'s symbols, as `object` finds it
/// for `symtab_symbol` (the first `SHT_SYMTAB` section, its `sh_link`, an `SHT_STRTAB`).
/// None when there is none inside the file: then no `.symtab` symbol has a name.
pub(crate) fn symtab_names<'d, R: ReadRef<'d>>(data: R) -> Option<Range<u64>> {
    let endian = LittleEndian;
    let header = Header::parse(data).ok()?;
    let table = header.sections(endian, data).ok()?;
    let symtab = table.iter().find(|s| s.sh_type(endian) == SHT_SYMTAB)?;
    let link = SectionIndex(usize::try_from(symtab.sh_link(endian)).ok()?);
    if link.0 == 0 {
        return None;
    }
    let strings = table.section(link).ok()?;
    if strings.sh_type(endian) != SHT_STRTAB {
        return None;
    }
    let start = strings.sh_offset(endian);
    let end = start.checked_add(strings.sh_size(endian))?;
    (end <= data.len().ok()?).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(vaddr: u64, file_offset: u64, file_size: u64, executable: bool) -> LoadSegment {
        LoadSegment {
            vaddr,
            file_offset,
            file_size,
            mem_size: file_size,
            executable,
            writable: !executable,
        }
    }

    /// `ElfLayout::parse` of bytes in memory.
    fn parse(data: &[u8]) -> Result<ElfLayout, String> {
        ElfLayout::parse(data)
    }

    fn layout(segments: Vec<LoadSegment>) -> ElfLayout {
        ElfLayout { pie: false, has_symtab: false, entry: 0, segments, sections: Vec::new() }
    }

    #[test]
    fn writable_data_includes_bss_and_excludes_code_and_read_only() {
        let mut data = segment(0x500000, 0x100000, 0x1000, false);
        data.mem_size = 0x3000; // .bss after the file bytes
        let mut rodata = segment(0x480000, 0x80000, 0x1000, false);
        rodata.writable = false;
        let layout = layout(vec![segment(0x401000, 0x1000, 0x7f000, true), rodata, data]);
        assert!(layout.is_writable_data(0x500000, 4));
        assert!(layout.is_writable_data(0x502ffc, 4), "in .bss, past the file bytes");
        assert!(!layout.is_writable_data(0x502ffe, 4), "straddles the end");
        assert!(!layout.is_writable_data(0x480010, 4), "read-only data");
        assert!(!layout.is_writable_data(0x401000, 4), "code");
        assert!(!layout.is_writable_data(u64::MAX - 1, 4));
    }

    #[test]
    fn code_offset_uses_the_executable_segment_containing_the_address() {
        // Shaped like a cgo build: a read-only segment, then code at a different offset.
        let layout = layout(vec![
            segment(0x400000, 0, 0x1678, false),
            segment(0x402000, 0x2000, 0x81acd, true),
            segment(0x484000, 0x84000, 0x8fe68, false),
        ]);
        assert_eq!(layout.code_file_offset(0x4167e0), Ok(0x167e0));
        assert_eq!(layout.code_file_offset(0x402000), Ok(0x2000));
        // In a data segment: not code.
        assert_eq!(
            layout.code_file_offset(0x484010),
            Err(AddressError::NotExecutable { address: 0x484010 })
        );
        // Past the end of the code segment's file bytes.
        assert!(layout.code_file_offset(0x402000 + 0x81acd).is_err());
        assert!(layout.code_file_offset(0).is_err());
        assert!(layout.code_file_offset(u64::MAX).is_err());
    }

    #[test]
    fn pie_segments_with_vaddr_different_from_offset() {
        // External-linker PIE: the RW segment's vaddr and offset differ by a page.
        let layout = layout(vec![
            segment(0x1c000, 0x1c000, 0x7c07d, true),
            segment(0xba7b0, 0xb97b0, 0x840d0, false),
        ]);
        assert_eq!(layout.code_file_offset(0x1c400), Ok(0x1c400));
        let data = vec![0u8; 0x140000];
        assert_eq!(layout.loaded_bytes(&data, 0xba7b0, 16).map(|b| b.len()), Some(16));
        assert!(layout.loaded_bytes(&data, 0xba7b0 + 0x840d0 - 8, 16).is_none());
    }

    #[test]
    fn code_bytes_checks_length_against_segment_and_file() {
        let layout = layout(vec![segment(0x1000, 0x100, 0x20, true)]);
        let data: Vec<u8> = (0..0x120u32).map(|b| b as u8).collect();
        assert_eq!(layout.code_bytes(&data, 0x1000, 4), Ok(&data[0x100..0x104]));
        assert_eq!(
            layout.code_bytes(&data, 0x1010, 0x20),
            Err(AddressError::NotInFile { address: 0x1010, len: 0x20 })
        );
        // A segment that claims more file bytes than the file has.
        let short = &data[..0x108];
        assert!(layout.code_bytes(short, 0x1000, 0x10).is_err());
    }

    #[test]
    fn rejects_non_elf_and_foreign_elf() {
        assert!(parse(b"").unwrap_err().contains("no ELF magic"));
        assert!(parse(b"#!/bin/sh\necho hi\n").unwrap_err().contains("no ELF magic"));
        assert!(parse(b"\x7fELF\x02\x01\x01").unwrap_err().contains("truncated"));
        let mut ident = vec![0u8; 64];
        ident[..4].copy_from_slice(b"\x7fELF");
        ident[4] = 1;
        ident[5] = 1;
        assert!(parse(&ident).unwrap_err().contains("32-bit"));
        ident[4] = 2;
        ident[5] = 2;
        assert!(parse(&ident).unwrap_err().contains("big-endian"));
        // Right class and encoding, but version 0 and machine 0: rejected, no panic.
        ident[5] = 1;
        assert!(parse(&ident).is_err());
        ident[6] = 1; // EV_CURRENT
        ident[16] = 2; // ET_EXEC
        ident[18] = 3; // EM_386
        assert!(parse(&ident).unwrap_err().contains("not x86-64"));
    }

    #[test]
    fn checked_range_rejects_overflow() {
        assert_eq!(checked_range(2, 3, 5), Some(2..5));
        assert_eq!(checked_range(2, 4, 5), None);
        assert_eq!(checked_range(u64::MAX, 2, 5), None);
        assert_eq!(checked_range(1, u64::MAX, 5), None);
    }
}
