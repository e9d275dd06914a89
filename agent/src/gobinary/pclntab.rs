//! The Go pclntab ("pc-line table"): the runtime's own function table, present even in
//! binaries built with `-ldflags="-s -w"`. golens reads only its header and function table
//! (name, entry address, end address) to find functions when `.symtab` is absent.
//!
//! Header layouts, from `runtime/symtab.go` (`pcHeader`), 64-bit fields:
//!
//! | magic      | Go        | words after magic, pad, pad, minLC, ptrSize                 |
//! |------------|-----------|-------------------------------------------------------------|
//! | 0xfffffffa | 1.16-1.17 | nfunc, nfiles, funcnameOffset, cu-, filetab-, pctab-, pclnOffset |
//! | 0xfffffff0 | 1.18-1.19 | nfunc, nfiles, textStart, funcnameOffset, ..., pclnOffset   |
//! | 0xfffffff1 | 1.20+     | as 1.18 (textStart is 0 since 1.26, see below)              |
//!
//! Since Go 1.26 textStart is written as 0 (it needed a relocation; the runtime reads
//! `moduledata.text` instead), which also lets the pclntab stay in the read-only `.gopclntab`
//! in PIE builds; the text start is then resolved elsewhere (`symbols::resolve_text_start`).
//!
//! The function table starts at `pclnOffset`: `nfunc` pairs (entry, funcoff) and one final entry
//! (the end of the last function). In 1.16 both are pointer-sized and entry is an address; from
//! 1.18 both are `uint32` and entry is an offset from textStart. `funcoff` locates a `_func`
//! (relative to `pclnOffset`) whose `nameOff` field (`int32`, after the entry field) indexes
//! NUL-terminated names at `funcnameOffset`.

use std::fmt;

/// Which header layout a pclntab has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PclntabVersion {
    /// Go 1.16 and 1.17.
    Go116,
    /// Go 1.18 and 1.19.
    Go118,
    /// Go 1.20 and later.
    Go120,
}

impl PclntabVersion {
    fn from_magic(magic: u32) -> Option<PclntabVersion> {
        match magic {
            0xffff_fffa => Some(PclntabVersion::Go116),
            0xffff_fff0 => Some(PclntabVersion::Go118),
            0xffff_fff1 => Some(PclntabVersion::Go120),
            _ => None,
        }
    }

    /// Entries are uint32 offsets from textStart (1.18+), not addresses.
    fn relative_entries(self) -> bool {
        self != PclntabVersion::Go116
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PclntabError {
    Truncated,
    UnknownMagic(u32),
    Unsupported(String),
}

impl fmt::Display for PclntabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PclntabError::Truncated => write!(f, "pclntab is truncated"),
            PclntabError::UnknownMagic(m) => {
                write!(f, "unknown pclntab magic {m:#010x} (Go older than 1.16?)")
            }
            PclntabError::Unsupported(what) => write!(f, "unsupported pclntab: {what}"),
        }
    }
}

/// The parts of `pcHeader` golens uses, checked against the table's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PclnHeader {
    pub version: PclntabVersion,
    pub nfunc: usize,
    /// `runtime.text` as stored in the header: 0 for 1.16/1.17, and 0 again since Go 1.26.
    pub text_start: u64,
    pub funcname_offset: usize,
    pub pcln_offset: usize,
}

impl PclnHeader {
    pub fn parse(data: &[u8]) -> Result<PclnHeader, PclntabError> {
        let magic = read_u32(data, 0).ok_or(PclntabError::Truncated)?;
        let version = PclntabVersion::from_magic(magic).ok_or(PclntabError::UnknownMagic(magic))?;
        let fixed = data.get(4..8).ok_or(PclntabError::Truncated)?;
        let (pad1, pad2, min_lc, ptr_size) = (fixed[0], fixed[1], fixed[2], fixed[3]);
        if pad1 != 0 || pad2 != 0 {
            return Err(PclntabError::Unsupported("non-zero header padding".into()));
        }
        if min_lc != 1 {
            return Err(PclntabError::Unsupported(format!(
                "instruction quantum {min_lc} (not x86)"
            )));
        }
        if ptr_size != 8 {
            return Err(PclntabError::Unsupported(format!("pointer size {ptr_size}")));
        }
        let word = |index: usize| read_u64(data, 8 + 8 * index).ok_or(PclntabError::Truncated);
        let to_usize = |v: u64| usize::try_from(v).map_err(|_| PclntabError::Truncated);
        let nfunc = to_usize(word(0)?)?;
        let (text_start, funcname_offset, pcln_offset) = if version.relative_entries() {
            (word(2)?, to_usize(word(3)?)?, to_usize(word(7)?)?)
        } else {
            (0, to_usize(word(2)?)?, to_usize(word(6)?)?)
        };
        let header = PclnHeader { version, nfunc, text_start, funcname_offset, pcln_offset };
        // The whole function table and the name table's start must be inside the data.
        let table_end = nfunc
            .checked_mul(2)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(header.field_size()))
            .and_then(|n| n.checked_add(pcln_offset))
            .ok_or(PclntabError::Truncated)?;
        if nfunc == 0 || table_end > data.len() || funcname_offset >= data.len() {
            return Err(PclntabError::Truncated);
        }
        Ok(header)
    }

    fn field_size(&self) -> usize {
        if self.version.relative_entries() {
            4
        } else {
            8
        }
    }
}

/// One function of the table: `[entry, end)` where end is the next function's entry (so it
/// includes the alignment padding after the function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FuncEntry<'d> {
    pub name: &'d [u8],
    pub entry: u64,
    pub end: u64,
    /// `abi.FuncFlagAsm`: written in assembly (ABI0).
    pub is_asm: bool,
}

/// `abi.FuncFlagAsm` (runtime `funcFlag_ASM`, 1 << 2).
const FUNC_FLAG_ASM: u8 = 1 << 2;

/// A pclntab with a known text start, ready for lookups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FuncTable<'d> {
    data: &'d [u8],
    header: PclnHeader,
    /// Added to 1.18+ entry offsets; ignored for 1.16.
    text_start: u64,
}

impl<'d> FuncTable<'d> {
    pub fn new(data: &'d [u8], header: PclnHeader, text_start: u64) -> FuncTable<'d> {
        FuncTable { data, header, text_start }
    }

    /// The raw functab field `field` (0 = entry, 1 = funcoff) of row `index`; the final row
    /// `nfunc` has only the entry.
    fn field(&self, index: usize, field: usize) -> Option<u64> {
        let size = self.header.field_size();
        let at = self.header.pcln_offset.checked_add((index * 2 + field).checked_mul(size)?)?;
        if size == 4 {
            read_u32(self.data, at).map(u64::from)
        } else {
            read_u64(self.data, at)
        }
    }

    fn entry(&self, index: usize) -> Option<u64> {
        let raw = self.field(index, 0)?;
        if self.header.version.relative_entries() {
            self.text_start.checked_add(raw)
        } else {
            Some(raw)
        }
    }

    fn name(&self, index: usize) -> Option<&'d [u8]> {
        let func_offset = usize::try_from(self.field(index, 1)?).ok()?;
        let func = self.header.pcln_offset.checked_add(func_offset)?;
        // `_func` starts with the entry (uintptr in 1.16, uint32 entryOff since 1.18),
        // then nameOff.
        let name_off = read_u32(self.data, func.checked_add(self.header.field_size())?)?;
        let start = self.header.funcname_offset.checked_add(usize::try_from(name_off).ok()?)?;
        let rest = self.data.get(start..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..len])
    }

    /// The `flag` byte of row `index`'s `_func` (`abi.FuncFlag`, Go 1.17+; 0 before).
    fn flag(&self, index: usize) -> Option<u8> {
        let func_offset = usize::try_from(self.field(index, 1)?).ok()?;
        let func = self.header.pcln_offset.checked_add(func_offset)?;
        // _func: entry, nameOff, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset,
        // [startLine (1.20+)], funcID u8, flag u8.
        let flag_at = match self.header.version {
            PclntabVersion::Go116 => 8 + 4 * 8 + 1,
            PclntabVersion::Go118 => 4 + 4 * 8 + 1,
            PclntabVersion::Go120 => 4 + 4 * 9 + 1,
        };
        self.data.get(func.checked_add(flag_at)?).copied()
    }

    /// Row `index`, or None when that row is malformed.
    pub fn get(&self, index: usize) -> Option<FuncEntry<'d>> {
        if index >= self.header.nfunc {
            return None;
        }
        let entry = self.entry(index)?;
        let end = self.entry(index + 1)?;
        if end < entry {
            return None;
        }
        let is_asm = self.flag(index)? & FUNC_FLAG_ASM != 0;
        Some(FuncEntry { name: self.name(index)?, entry, end, is_asm })
    }

    #[cfg(test)]
    /// The function whose `[entry, end)` holds `address` (binary search: entries ascend).
    pub fn containing(&self, address: u64) -> Option<FuncEntry<'d>> {
        let (mut low, mut high) = (0, self.header.nfunc);
        while low < high {
            let mid = low + (high - low) / 2;
            if self.entry(mid)? <= address {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        let found = self.get(low.checked_sub(1)?)?;
        (address < found.end).then_some(found)
    }

    /// Every function named exactly `name`, in address order (a linear scan over the name
    /// table). Usually one; a Go function called from assembly also has an ABI0 wrapper of
    /// the same name here (`.symtab` calls it `<name>.abi0`).
    pub fn find_all(&self, name: &str) -> Vec<FuncEntry<'d>> {
        (0..self.header.nfunc)
            .filter(|&i| self.name(i) == Some(name.as_bytes()))
            .filter_map(|i| self.get(i))
            .collect()
    }
}

/// Finds a pclntab by its header inside `data` (for externally linked PIE binaries, where
/// the linker merged `.data.rel.ro.gopclntab` into `.data.rel.ro` and, when stripped, no symbol
/// says where it is). A candidate must parse, and its first functions must have sane names and
/// ascending entries. Returns the offset in `data`.
pub(crate) fn find_by_header(data: &[u8]) -> Option<usize> {
    const MAGICS: [[u8; 4]; 3] =
        [0xffff_fffau32.to_le_bytes(), 0xffff_fff0u32.to_le_bytes(), 0xffff_fff1u32.to_le_bytes()];
    // The linker aligns the table to at least 8 bytes.
    (0..data.len().saturating_sub(8)).step_by(8).find(|&offset| {
        let candidate = &data[offset..];
        MAGICS.iter().any(|m| candidate.starts_with(m)) && looks_like_pclntab(candidate)
    })
}

fn looks_like_pclntab(data: &[u8]) -> bool {
    let Ok(header) = PclnHeader::parse(data) else {
        return false;
    };
    let table = FuncTable::new(data, header, 0);
    let checked = header.nfunc.min(16);
    (0..checked).all(|i| {
        table.get(i).is_some_and(|f| {
            !f.name.is_empty() && f.name.iter().all(|b| b.is_ascii_graphic() || *b >= 0x80)
        })
    })
}

/// Reads `moduledata.text` for Go 1.26+, whose pclntab header no longer stores textStart.
/// `moduledata` begins `pcHeader *pcHeader; funcnametab []byte; ...` and `text` is at byte
/// 176 (unchanged from 1.16 to 1.27): we look for a pointer to the pclntab followed by a pointer
/// to its name table, in the given data sections (`.go.module` since 1.26, `.noptrdata` before).
pub(crate) fn moduledata_text<'d>(
    candidates: impl IntoIterator<Item = &'d [u8]>,
    pclntab_vaddr: u64,
    funcnametab_vaddr: u64,
) -> Option<u64> {
    const TEXT_FIELD: usize = 176;
    let pclntab_ptr = pclntab_vaddr.to_le_bytes();
    for data in candidates {
        let found = (0..data.len().saturating_sub(TEXT_FIELD + 8)).step_by(8).find(|&at| {
            data[at..at + 8] == pclntab_ptr && read_u64(data, at + 8) == Some(funcnametab_vaddr)
        });
        if let Some(at) = found {
            return read_u64(data, at + TEXT_FIELD).filter(|&text| text != 0);
        }
    }
    None
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = data.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a pclntab holding `functions` (name, entry offset from text), in the given
    /// layout. The last function ends at `end`.
    pub(crate) fn build(
        version: PclntabVersion,
        text: u64,
        funcs: &[(&str, u64)],
        end: u64,
    ) -> Vec<u8> {
        let magic: u32 = match version {
            PclntabVersion::Go116 => 0xffff_fffa,
            PclntabVersion::Go118 => 0xffff_fff0,
            PclntabVersion::Go120 => 0xffff_fff1,
        };
        let relative = version.relative_entries();
        let field = if relative { 4 } else { 8 };
        let header_len = 72;
        let mut names = Vec::new();
        let mut name_offsets = Vec::new();
        for (name, _) in funcs {
            name_offsets.push(names.len() as u32);
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let funcname_offset = header_len;
        let pcln_offset = funcname_offset + names.len().next_multiple_of(8);
        let functab_len = (funcs.len() * 2 + 1) * field;
        // One `_func` per function: entry, nameOff, 7-8 more u32 fields, funcID, flag, pad,
        // nfuncdata; all zero but entry and nameOff.
        let func_len = field + 4 * 10;
        let mut out = vec![0u8; pcln_offset + functab_len + funcs.len() * func_len];
        out[0..4].copy_from_slice(&magic.to_le_bytes());
        out[6] = 1;
        out[7] = 8;
        let words: Vec<u64> = if relative {
            vec![funcs.len() as u64, 1, text, funcname_offset as u64, 0, 0, 0, pcln_offset as u64]
        } else {
            vec![funcs.len() as u64, 1, funcname_offset as u64, 0, 0, 0, pcln_offset as u64]
        };
        for (i, w) in words.iter().enumerate() {
            out[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        out[funcname_offset..funcname_offset + names.len()].copy_from_slice(&names);
        let put = |out: &mut Vec<u8>, at: usize, value: u64| {
            if field == 4 {
                out[at..at + 4].copy_from_slice(&(value as u32).to_le_bytes());
            } else {
                out[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
        };
        let entry_value = |offset: u64| if relative { offset } else { text + offset };
        for (i, (_, entry)) in funcs.iter().enumerate() {
            let func_off = functab_len + i * func_len;
            put(&mut out, pcln_offset + i * 2 * field, entry_value(*entry));
            put(&mut out, pcln_offset + (i * 2 + 1) * field, func_off as u64);
            put(&mut out, pcln_offset + func_off, entry_value(*entry));
            let name_at = pcln_offset + func_off + field;
            out[name_at..name_at + 4].copy_from_slice(&name_offsets[i].to_le_bytes());
        }
        put(&mut out, pcln_offset + funcs.len() * 2 * field, entry_value(end));
        out
    }

    const FUNCS: &[(&str, u64)] = &[
        ("go:buildid", 0),
        ("runtime.gcStart", 0x40),
        ("runtime.stopTheWorldWithSema", 0x5e0),
        ("main.main", 0x700),
    ];

    #[test]
    fn duplicate_names_are_all_returned() {
        let funcs =
            [("runtime.entersyscall", 0x0), ("main.main", 0x40), ("runtime.entersyscall", 0x80)];
        let data = build(PclntabVersion::Go120, 0x401000, &funcs, 0xa0);
        let table = FuncTable::new(&data, PclnHeader::parse(&data).unwrap(), 0x401000);
        let found: Vec<(u64, u64)> =
            table.find_all("runtime.entersyscall").iter().map(|f| (f.entry, f.end)).collect();
        assert_eq!(found, vec![(0x401000, 0x401040), (0x401080, 0x4010a0)]);
    }

    #[test]
    fn reads_all_three_layouts() {
        for version in [PclntabVersion::Go116, PclntabVersion::Go118, PclntabVersion::Go120] {
            let data = build(version, 0x401000, FUNCS, 0x760);
            let header = PclnHeader::parse(&data).unwrap();
            assert_eq!(header.version, version);
            assert_eq!(header.nfunc, 4);
            let expected_text = if version == PclntabVersion::Go116 { 0 } else { 0x401000 };
            assert_eq!(header.text_start, expected_text);
            let table = FuncTable::new(&data, header, 0x401000);
            let gc = table.find_all("runtime.gcStart");
            assert_eq!(gc.len(), 1);
            assert_eq!((gc[0].entry, gc[0].end), (0x401040, 0x4015e0), "{version:?}");
            let main = table.find_all("main.main");
            assert_eq!((main[0].entry, main[0].end), (0x401700, 0x401760));
            assert_eq!(table.find_all("runtime.gcStar"), vec![]);
            assert_eq!(table.find_all("main.main.func1"), vec![]);
            assert_eq!(table.get(0).unwrap().name, b"go:buildid");
            assert_eq!(table.get(4), None);
            assert_eq!(table.containing(0x401040).unwrap().name, b"runtime.gcStart");
            assert_eq!(table.containing(0x4015df).unwrap().name, b"runtime.gcStart");
            assert_eq!(table.containing(0x4015e0).unwrap().name, b"runtime.stopTheWorldWithSema");
            assert_eq!(table.containing(0x401000).unwrap().name, b"go:buildid");
            assert_eq!(table.containing(0x40175f).unwrap().name, b"main.main");
            assert_eq!(table.containing(0x401760), None);
            assert_eq!(table.containing(0x400fff), None);
            assert!(!table.get(1).unwrap().is_asm);
        }
    }

    #[test]
    fn rejects_bad_headers() {
        let good = build(PclntabVersion::Go120, 0x401000, FUNCS, 0x760);
        assert_eq!(PclnHeader::parse(&[]), Err(PclntabError::Truncated));
        let mut bad = good.clone();
        bad[0] = 0xfb; // 1.2-1.15 magic 0xfffffffb
        assert!(matches!(PclnHeader::parse(&bad), Err(PclntabError::UnknownMagic(0xffff_fffb))));
        let mut bad = good.clone();
        bad[7] = 4;
        assert!(matches!(PclnHeader::parse(&bad), Err(PclntabError::Unsupported(_))));
        let mut bad = good.clone();
        bad[6] = 4; // arm64's instruction quantum
        assert!(matches!(PclnHeader::parse(&bad), Err(PclntabError::Unsupported(_))));
        let mut bad = good.clone();
        bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // nfunc
        assert_eq!(PclnHeader::parse(&bad), Err(PclntabError::Truncated));
        let mut bad = good.clone();
        bad[8..16].copy_from_slice(&(1u64 << 61).to_le_bytes());
        assert_eq!(PclnHeader::parse(&bad), Err(PclntabError::Truncated));
    }

    #[test]
    fn truncated_and_corrupted_tables_never_panic() {
        for version in [PclntabVersion::Go116, PclntabVersion::Go118, PclntabVersion::Go120] {
            let good = build(version, 0x401000, FUNCS, 0x760);
            for len in 0..good.len() {
                if let Ok(header) = PclnHeader::parse(&good[..len]) {
                    let table = FuncTable::new(&good[..len], header, 0x401000);
                    let _ = table.find_all("main.main");
                }
            }
            // Flip every byte in turn to 0xff: lookups may fail, never panic.
            for at in 0..good.len() {
                let mut bad = good.clone();
                bad[at] = 0xff;
                if let Ok(header) = PclnHeader::parse(&bad) {
                    let table = FuncTable::new(&bad, header, u64::MAX - 4);
                    let _ = table.find_all("main.main");
                    let _ = table.containing(0x401700);
                    for i in 0..header.nfunc {
                        let _ = table.get(i);
                    }
                }
                let _ = find_by_header(&bad);
            }
        }
    }

    #[test]
    fn finds_table_inside_a_larger_section() {
        let table = build(PclntabVersion::Go118, 0x1c400, FUNCS, 0x760);
        let mut section = vec![0u8; 0x200];
        // A decoy magic with garbage after it, as data might contain.
        section[0x40..0x44].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        section[0x48] = 0xff;
        section.extend_from_slice(&table);
        assert_eq!(find_by_header(&section), Some(0x200));
        assert_eq!(find_by_header(&section[..0x200]), None);
        assert_eq!(find_by_header(&[]), None);
    }

    #[test]
    fn moduledata_text_found_by_pointer_pair() {
        let mut data = vec![0u8; 512];
        let at = 64;
        data[at..at + 8].copy_from_slice(&0x4a8be8u64.to_le_bytes());
        data[at + 8..at + 16].copy_from_slice(&(0x4a8be8u64 + 0x48).to_le_bytes());
        data[at + 176..at + 184].copy_from_slice(&0x401000u64.to_le_bytes());
        assert_eq!(moduledata_text([&data[..]], 0x4a8be8, 0x4a8be8 + 0x48), Some(0x401000));
        // A pointer to the pclntab not followed by the name table pointer is not moduledata.
        assert_eq!(moduledata_text([&data[..]], 0x4a8be8, 0x4a8be8 + 0x60), None);
        assert_eq!(moduledata_text([&data[..100]], 0x4a8be8, 0x4a8be8 + 0x48), None);
    }
}
