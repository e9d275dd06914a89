//! Finding and reading Go binaries: is an executable Go, which Go version
//! built it, and (for the runtime probes) where its functions are and where on them a uprobe
//! may go.
//!
//! The file is read with `pread`, never mapped: a shared mapping of a file that a deploy
//! truncates raises SIGBUS in the agent. Whether a file is Go is decided from its headers
//! (`classify`: a few KiB read for a non-Go file, whatever its size); a Go binary is then
//! copied whole into memory, and everything is parsed from that copy, so a `GoBinary` answers
//! the same whatever happens to the file afterwards.
//!
//! - `file_reader`: positioned reads, with a check that the file did not shrink
//! - `classify`: Go or not, from the headers
//! - `elf`: segments, sections, virtual address -> file offset
//! - `buildinfo`: `.go.buildinfo` (Go version, module path)
//! - `pclntab`: the Go function table (for binaries without `.symtab`)
//! - `symbols`: function lookup, `.symtab` first, pclntab second
//! - `attach_points`: entry and return probe addresses, found by decoding x86-64
//! - `runtime_variables`: addresses of runtime globals (`runtime.gomaxprocs`), to read
//!   them from a running process: `.symtab`, else decoding the functions that read them

mod attach_points;
mod buildinfo;
mod classify;
mod elf;
mod file_reader;
pub mod fuzzing;
mod pclntab;
mod runtime_variables;
mod symbols;

#[cfg(test)]
mod file_change_tests;
#[cfg(test)]
pub(crate) mod go_toolchain;
#[cfg(test)]
mod real_binaries_tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(test)]
pub use attach_points::is_return;
pub use attach_points::{
    decode_one, is_kernel_emulated, EntryProbe, ProbeError, ProbePoint, StackCheckCondition,
};
pub use elf::AddressError;
pub use pclntab::PclntabVersion;
pub use runtime_variables::{FoundBy, RuntimeVariable, VariableError};
pub use symbols::Function;
#[cfg(test)]
pub use symbols::SymbolSource;

use classify::{ClassifyError, Verdict, PCLNTAB_SECTIONS};
use elf::ElfLayout;
use file_reader::FileReader;
use symbols::PclntabLocation;

/// What golens knows about one Go executable.
#[derive(Clone)]
pub struct GoBinary {
    /// e.g. "go1.21.13", from `.go.buildinfo`; None when it cannot be read.
    pub go_version: Option<String>,
    /// Main module path from `.go.buildinfo`, when present.
    pub module_path: Option<String>,
    /// No `.symtab` (built with `-ldflags=-s`).
    pub stripped: bool,
    /// ELF type ET_DYN (`-buildmode=pie`).
    pub pie: bool,
    image: Arc<Image>,
}

/// The binary's bytes (a copy: never a mapping of the file) and what was parsed from them once.
struct Image {
    path: PathBuf,
    bytes: Vec<u8>,
    layout: ElfLayout,
    pclntab: Option<PclntabLocation>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an ELF file golens can read: {reason}")]
    Elf { path: PathBuf, reason: String },
    #[error("{path}: not a Go binary (no .go.buildinfo or .gopclntab section)")]
    NotGo { path: PathBuf },
}

impl GoBinary {
    /// Reads the executable at `path` (often `/proc/PID/exe`, which works even when the file
    /// was deleted or lives in another mount namespace: the kernel hands us the open inode).
    ///
    /// A non-Go file is rejected from its headers (`classify`); a Go one is copied into memory
    /// (at most `file_reader::MAX_GO_BINARY_BYTES`). A file that shrinks or changes size while
    /// being read is an `Io` error (`UnexpectedEof`): worth retrying once the writer is done.
    pub fn open(path: &Path) -> Result<GoBinary, TargetError> {
        let reader = FileReader::open(path)
            .map_err(|source| TargetError::Io { path: path.to_path_buf(), source })?;
        Self::from_reader(path, &reader)
    }

    /// `open` on an already open file (tests count what it reads).
    fn from_reader(path: &Path, reader: &FileReader) -> Result<GoBinary, TargetError> {
        let io_error = |source| TargetError::Io { path: path.to_path_buf(), source };
        let elf_error = |reason: String| TargetError::Elf { path: path.to_path_buf(), reason };
        if reader.len() == 0 {
            return Err(elf_error("empty file".to_string()));
        }
        match classify::classify(reader) {
            Ok(Verdict::NotGo) => return Err(TargetError::NotGo { path: path.to_path_buf() }),
            Ok(Verdict::Go | Verdict::WholeFileDecides) => {}
            Err(ClassifyError::Elf(reason)) => return Err(elf_error(reason)),
            Err(ClassifyError::Io(source)) => return Err(io_error(source)),
        }
        Self::parse(path, reader.read_all().map_err(io_error)?)
    }

    /// Reads a binary held in memory (`path` only names it in errors): what the
    /// fuzz targets feed arbitrary bytes to.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<GoBinary, TargetError> {
        Self::parse(path, bytes)
    }

    /// Everything golens knows about a binary, from its bytes. The definition of Go that
    /// `classify` decides from the headers alone is this function's.
    fn parse(path: &Path, bytes: Vec<u8>) -> Result<GoBinary, TargetError> {
        let elf_error = |reason: String| TargetError::Elf { path: path.to_path_buf(), reason };
        let data: &[u8] = &bytes;

        let layout = ElfLayout::parse(data).map_err(elf_error)?;
        let build_info = layout.section(".go.buildinfo").and_then(|section| {
            buildinfo::parse(&data[section.file_range.clone()], |vaddr, len| {
                layout.loaded_bytes(data, vaddr, len)
            })
        });
        let pclntab = match PclntabLocation::find(data, &layout, build_info.is_some()) {
            Some(Ok(location)) => {
                if location.text_start.is_none() && location.version() != PclntabVersion::Go116 {
                    tracing::warn!(
                        path = %path.display(),
                        "pclntab found but runtime.text unknown: pclntab lookups will fail"
                    );
                }
                Some(location)
            }
            Some(Err(reason)) => {
                tracing::warn!(path = %path.display(), %reason, "unreadable pclntab");
                None
            }
            None => None,
        };
        let has_pclntab_section =
            PCLNTAB_SECTIONS.iter().any(|name| layout.section(name).is_some());
        if build_info.is_none() && pclntab.is_none() && !has_pclntab_section {
            return Err(TargetError::NotGo { path: path.to_path_buf() });
        }

        let build_info = build_info.unwrap_or_default();
        Ok(GoBinary {
            go_version: build_info.go_version.clone(),
            module_path: build_info.module_path(),
            stripped: !layout.has_symtab,
            pie: layout.pie,
            image: Arc::new(Image { path: path.to_path_buf(), bytes, layout, pclntab }),
        })
    }

    #[cfg(test)]
    /// The path this binary was opened from.
    pub fn path(&self) -> &Path {
        &self.image.path
    }

    #[cfg(test)]
    /// The pclntab layout, when a readable pclntab was found.
    pub fn pclntab_version(&self) -> Option<PclntabVersion> {
        self.image.pclntab.as_ref().map(PclntabLocation::version)
    }

    /// Finds a function by its full Go name (`runtime.gcStart`, `main.main`):
    /// `.symtab` when present, else the pclntab.
    pub fn function(&self, name: &str) -> Option<Function> {
        match self.symtab_function(name) {
            Some(function) => Some(function),
            None => self.pclntab_function(name),
        }
    }

    /// The function as `.symtab` has it (None for stripped binaries). A symbol of size 0
    /// gets its size from the pclntab.
    pub fn symtab_function(&self, name: &str) -> Option<Function> {
        if !self.image.layout.has_symtab {
            return None;
        }
        let mut function = symbols::symtab_function(&self.image.bytes, name)?;
        if function.size == 0 {
            let from_pclntab =
                self.pclntab_function(name).filter(|f| f.address == function.address);
            function.size = from_pclntab?.size;
        }
        Some(function)
    }

    /// The function as the pclntab has it (works on stripped binaries).
    pub fn pclntab_function(&self, name: &str) -> Option<Function> {
        self.image.pclntab.as_ref()?.function(&self.image.bytes, &self.image.layout, name)
    }

    #[cfg(test)]
    /// The function containing `address`, from the pclntab (e.g. to name a call target).
    pub fn function_at(&self, address: u64) -> Option<Function> {
        self.image.pclntab.as_ref()?.function_at(&self.image.bytes, address)
    }

    #[cfg(test)]
    /// Every function the binary knows under `name`: the `.symtab` symbol, then each pclntab
    /// entry (the pclntab gives an ABI0 wrapper the same name as the function it wraps).
    pub fn functions_named(&self, name: &str) -> Vec<Function> {
        let mut found: Vec<Function> = self.symtab_function(name).into_iter().collect();
        if let Some(pclntab) = &self.image.pclntab {
            found.extend(pclntab.functions(&self.image.bytes, name));
        }
        found
    }

    /// File offset of the code at virtual address `address` (through the executable PT_LOAD
    /// segment that contains it): what a uprobe is attached at.
    pub fn file_offset(&self, address: u64) -> Result<u64, AddressError> {
        self.image.layout.code_file_offset(address)
    }

    /// The machine code of `function`, borrowed from the binary's bytes.
    pub fn function_code(&self, function: &Function) -> Result<&[u8], AddressError> {
        self.image.layout.code_bytes(&self.image.bytes, function.address, function.size)
    }

    /// The entry probe point of `function`: its stack-check branch, never its first byte.
    /// Errors for functions without a stack check (NOSPLIT); the caller decides what to do.
    pub fn entry_probe_offset(&self, function: &Function) -> Result<EntryProbe, ProbeError> {
        let code = self.code_for_probes(function)?;
        let branch = attach_points::find_entry_branch(&function.name, code, function.address)?;
        Ok(EntryProbe {
            point: self.probe_point(function, branch.address)?,
            morestack_address: branch.morestack_address,
            system_stack: branch.system_stack,
            condition: branch.condition,
        })
    }

    /// A probe point on every `RET` of `function` (never a uretprobe: Go moves stacks).
    pub fn return_offsets(&self, function: &Function) -> Result<Vec<ProbePoint>, ProbeError> {
        let code = self.code_for_probes(function)?;
        attach_points::find_returns(&function.name, code, function.address)?
            .into_iter()
            .map(|address| self.probe_point(function, address))
            .collect()
    }

    /// A probe point on every direct call from `function` to `callee`.
    pub fn call_sites(
        &self,
        function: &Function,
        callee: &Function,
    ) -> Result<Vec<ProbePoint>, ProbeError> {
        let code = self.code_for_probes(function)?;
        attach_points::find_call_sites(&function.name, code, function.address, callee.address)?
            .into_iter()
            .map(|address| self.probe_point(function, address))
            .collect()
    }

    /// The last conditional branch of `function` before its `RET` that leads to a call of
    /// `callee` (see `attach_points::find_branch_to_call_before_return`), if any.
    pub fn branch_to_call_before_return(
        &self,
        function: &Function,
        callee: &Function,
    ) -> Result<Option<ProbePoint>, ProbeError> {
        let code = self.code_for_probes(function)?;
        attach_points::find_branch_to_call_before_return(
            &function.name,
            code,
            function.address,
            callee.address,
        )?
        .map(|address| self.probe_point(function, address))
        .transpose()
    }

    fn code_for_probes(&self, function: &Function) -> Result<&[u8], ProbeError> {
        self.function_code(function)
            .map_err(|source| ProbeError::Address { function: function.name.clone(), source })
    }

    fn probe_point(&self, function: &Function, address: u64) -> Result<ProbePoint, ProbeError> {
        let file_offset = self
            .file_offset(address)
            .map_err(|source| ProbeError::Address { function: function.name.clone(), source })?;
        Ok(ProbePoint { address, file_offset })
    }
}

impl fmt::Debug for GoBinary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoBinary")
            .field("path", &self.image.path)
            .field("go_version", &self.go_version)
            .field("module_path", &self.module_path)
            .field("stripped", &self.stripped)
            .field("pie", &self.pie)
            .field(
                "pclntab",
                &self.image.pclntab.as_ref().map(|p| (p.version(), p.origin, p.text_start)),
            )
            .finish()
    }
}

/// Two `GoBinary`s are equal when they describe the same facts about the same path.
impl PartialEq for GoBinary {
    fn eq(&self, other: &Self) -> bool {
        self.go_version == other.go_version
            && self.module_path == other.module_path
            && self.stripped == other.stripped
            && self.pie == other.pie
            && self.image.path == other.image.path
    }
}

impl Eq for GoBinary {}
