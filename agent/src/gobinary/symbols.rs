//! Finding a Go function by name: `.symtab` when the binary has one, else the pclntab
//! (which `-ldflags="-s -w"` keeps: the runtime needs it for stack traces).

use std::ops::Range;

use super::attach_points;
use super::elf::{self, ElfLayout};
use super::pclntab::{self, FuncTable, PclnHeader, PclntabVersion};

/// A function of the target binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    /// Link-time virtual address of the first instruction (for a PIE, relative to load base 0
    /// as the linker laid it out; uprobes want the file offset, see `GoBinary::file_offset`).
    pub address: u64,
    /// Bytes of code. From `.symtab` this is the exact size; from the pclntab it runs to the
    /// next function and so includes the INT3 alignment padding.
    pub size: u64,
    pub source: SymbolSource,
}

/// Where a `Function` was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolSource {
    Symtab,
    Pclntab,
}

/// How the pclntab was located (kept for diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PclntabOrigin {
    /// `.gopclntab`, or `.data.rel.ro.gopclntab` in internally linked PIE (Go <= 1.25).
    Section,
    /// `runtime.pclntab`..`runtime.epclntab` in `.symtab` (externally linked PIE).
    Symbol,
    /// Found by its header inside `.data.rel.ro` (externally linked PIE, stripped).
    HeaderScan,
}

/// A located, parsed pclntab with the text start its 1.18+ entries are relative to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PclntabLocation {
    pub file_range: Range<usize>,
    pub vaddr: u64,
    pub origin: PclntabOrigin,
    pub header: PclnHeader,
    /// `runtime.text`; None when it could not be determined (then pclntab lookups fail).
    pub text_start: Option<u64>,
}

impl PclntabLocation {
    /// Finds the pclntab. `go_like` allows the header scan of `.data.rel.ro`, which is only
    /// tried once `.go.buildinfo` has shown the file is Go.
    pub fn find(data: &[u8], layout: &ElfLayout, go_like: bool) -> Option<Result<Self, String>> {
        let (file_range, vaddr, origin) = Self::find_bytes(data, layout, go_like)?;
        let table = &data[file_range.clone()];
        let header = match PclnHeader::parse(table) {
            Ok(header) => header,
            Err(e) => return Some(Err(e.to_string())),
        };
        let text_start = resolve_text_start(data, layout, &header, vaddr);
        Some(Ok(PclntabLocation { file_range, vaddr, origin, header, text_start }))
    }

    fn find_bytes(
        data: &[u8],
        layout: &ElfLayout,
        go_like: bool,
    ) -> Option<(Range<usize>, u64, PclntabOrigin)> {
        for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
            if let Some(section) = layout.section(name) {
                return Some((section.file_range.clone(), section.vaddr, PclntabOrigin::Section));
            }
        }
        if layout.has_symtab {
            if let (Some((start, _)), Some((end, _))) = (
                elf::symtab_symbol(data, "runtime.pclntab", None),
                elf::symtab_symbol(data, "runtime.epclntab", None),
            ) {
                let len = end.checked_sub(start)?;
                if let Some(bytes) = layout.loaded_bytes(data, start, len) {
                    let offset = bytes.as_ptr() as usize - data.as_ptr() as usize;
                    return Some((offset..offset + bytes.len(), start, PclntabOrigin::Symbol));
                }
            }
        }
        if go_like {
            for name in [".data.rel.ro", ".rodata"] {
                let Some(section) = layout.section(name) else {
                    continue;
                };
                let bytes = &data[section.file_range.clone()];
                if let Some(at) = pclntab::find_by_header(bytes) {
                    let start = section.file_range.start + at;
                    return Some((
                        start..section.file_range.end,
                        section.vaddr + at as u64,
                        PclntabOrigin::HeaderScan,
                    ));
                }
            }
        }
        None
    }

    pub fn version(&self) -> PclntabVersion {
        self.header.version
    }

    fn table<'d>(&self, data: &'d [u8]) -> Option<FuncTable<'d>> {
        let bytes = data.get(self.file_range.clone())?;
        let text_start = match self.header.version {
            PclntabVersion::Go116 => 0,
            _ => self.text_start?,
        };
        Some(FuncTable::new(bytes, self.header, text_start))
    }

    /// Every pclntab function named `name`, in address order, with its `FuncFlagAsm` bit.
    fn entries(&self, data: &[u8], name: &str) -> Vec<(Function, bool)> {
        let Some(table) = self.table(data) else {
            return Vec::new();
        };
        table
            .find_all(name)
            .into_iter()
            .map(|found| (pclntab_function(name, &found), found.is_asm))
            .collect()
    }

    #[cfg(test)]
    /// Every pclntab function named `name`, in address order.
    pub fn functions(&self, data: &[u8], name: &str) -> Vec<Function> {
        self.entries(data, name).into_iter().map(|(f, _)| f).collect()
    }

    /// The pclntab function named `name`: the ABIInternal one, which is what `.symtab` calls
    /// `name` (it calls the other `name.abi0`). The pclntab gives both ABIs the same name when
    /// a Go function is called from assembly (an ABI0 wrapper calls the real function) or an
    /// assembly function is called from Go (an ABIInternal wrapper calls the assembly). So:
    /// drop assembly bodies (`FuncFlagAsm`), then among the rest drop wrappers of another
    /// (a direct call or jump to it), and take the first left; failing that, the first.
    pub fn function(&self, data: &[u8], layout: &ElfLayout, name: &str) -> Option<Function> {
        let candidates = self.entries(data, name);
        if candidates.len() > 1 {
            let go_entries: Vec<u64> =
                candidates.iter().filter(|(_, is_asm)| !is_asm).map(|(f, _)| f.address).collect();
            let wraps_another = |f: &Function| {
                let others: Vec<u64> =
                    go_entries.iter().copied().filter(|&e| e != f.address).collect();
                layout
                    .code_bytes(data, f.address, f.size)
                    .is_ok_and(|code| attach_points::branches_to_any(code, f.address, &others))
            };
            let chosen = candidates.iter().find(|(f, is_asm)| !is_asm && !wraps_another(f));
            if let Some((function, _)) = chosen {
                return Some(function.clone());
            }
        }
        candidates.into_iter().next().map(|(f, _)| f)
    }

    #[cfg(test)]
    /// The pclntab function containing `address`.
    pub fn function_at(&self, data: &[u8], address: u64) -> Option<Function> {
        let found = self.table(data)?.containing(address)?;
        let name = String::from_utf8_lossy(found.name).into_owned();
        Some(pclntab_function(&name, &found))
    }
}

fn pclntab_function(name: &str, found: &pclntab::FuncEntry<'_>) -> Function {
    Function {
        name: name.to_string(),
        address: found.entry,
        size: found.end - found.entry,
        source: SymbolSource::Pclntab,
    }
}

/// `runtime.text`, which 1.18+ pclntab entries are offsets from. In order of trust:
/// the `.symtab` symbol; the header's textStart (1.18-1.25; Go's own `debug/gosym` warns it
/// may be unrelocated, so it must land in code); `moduledata.text` (Go 1.26+ writes 0 in the
/// header). Not the `.text` section start: in cgo binaries C code comes first.
fn resolve_text_start(
    data: &[u8],
    layout: &ElfLayout,
    header: &PclnHeader,
    pclntab_vaddr: u64,
) -> Option<u64> {
    if header.version == PclntabVersion::Go116 {
        return None;
    }
    let in_code = |address: &u64| layout.is_code(*address);
    if layout.has_symtab {
        if let Some((text, _)) =
            elf::symtab_symbol(data, "runtime.text", None).filter(|(t, _)| in_code(t))
        {
            return Some(text);
        }
    }
    if in_code(&header.text_start) {
        return Some(header.text_start);
    }
    let funcnametab = pclntab_vaddr.checked_add(header.funcname_offset as u64)?;
    let candidates = [".go.module", ".noptrdata", ".data", ".data.rel.ro"]
        .into_iter()
        .filter_map(|name| layout.section(name))
        .filter_map(|section| data.get(section.file_range.clone()));
    pclntab::moduledata_text(candidates, pclntab_vaddr, funcnametab).filter(in_code)
}

/// A defined function symbol of `.symtab`. A size of 0 is left for the caller to fill in.
pub(crate) fn symtab_function(data: &[u8], name: &str) -> Option<Function> {
    let (address, size) = elf::symtab_function(data, name)?;
    (address != 0).then(|| Function {
        name: name.to_string(),
        address,
        size,
        source: SymbolSource::Symtab,
    })
}
