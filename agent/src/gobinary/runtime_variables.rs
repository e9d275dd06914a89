//! Where a Go runtime global variable lives, so that its current value can be
//! read from a running process (`/proc/PID/mem`) instead of probing the code
//! that writes it: no trap in the target at all.
//!
//! `.symtab` names it when the binary has one. Stripped binaries
//! (`-ldflags=-s -w`) keep no data symbols (`.gopclntab` lists functions
//! only), so the address is found by decoding functions that read the
//! variable: x86-64 Go code addresses globals RIP-relative, and the first
//! 32-bit load of such a function is, in every version of the test matrix
//! (1.19-1.27), the variable. Each reader is decoded on its own; when several
//! are linked they must agree, or no address is given (never a guess).

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};

use super::elf;
use super::GoBinary;

/// A runtime global variable and the functions that read it first thing.
#[derive(Debug, Clone, Copy)]
pub struct VariableSpec {
    /// Its `.symtab` name.
    pub name: &'static str,
    /// Its size in bytes (the `.symtab` symbol must say the same).
    pub size: u64,
    /// Functions whose first 32-bit RIP-relative load reads it.
    pub readers: &'static [&'static str],
}

/// `var gomaxprocs int32` (runtime/runtime2.go, every Go version): the
/// GOMAXPROCS in force, written by `procresize` when the world restarts.
/// - `runtime.GOMAXPROCS(n)` (runtime/debug.go): `lock(&sched.lock)` (a LEA
///   and a CALL of `runtime.lock2`), then `ret := int(gomaxprocs)`: a
///   `MOVSXD` (1.19-1.27). Linked into nearly every program (`sync.Pool`
///   calls it), but not all.
/// - `runtime.procresize(nprocs)` (runtime/proc.go): `old := gomaxprocs`
///   after the stack check and frame set-up: a `MOVL` (1.19-1.27). Always
///   linked (`schedinit` calls it).
pub const GOMAXPROCS: VariableSpec = VariableSpec {
    name: "runtime.gomaxprocs",
    size: 4,
    readers: &["runtime.GOMAXPROCS", "runtime.procresize"],
};

/// How far into a reader the load may be. Measured: the 7th instruction of
/// `procresize`, the 11th-13th of `GOMAXPROCS` (1.19-1.27).
const MAX_INSTRUCTIONS: usize = 32;

/// A runtime variable's link-time address (a PIE adds its load bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeVariable {
    pub address: u64,
    pub found_by: FoundBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundBy {
    /// Its `.symtab` symbol.
    Symtab,
    /// Decoding its readers (stripped binaries).
    Decoded,
}

/// Why a variable's address is not known. Said once per binary; its value
/// then comes from elsewhere (for GOMAXPROCS: the environment or the
/// version's default rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariableError {
    #[error(
        "{name}: no .symtab and no Go version (no .go.buildinfo): its address is only \
         decoded for known versions"
    )]
    UnknownVersion { name: &'static str },
    #[error("{name}: .symtab says {size} bytes, {expected} expected")]
    WrongSize { name: &'static str, size: u64, expected: u64 },
    #[error("{name}: none of {readers:?} is in the binary")]
    NoReader { name: &'static str, readers: &'static [&'static str] },
    #[error("{name}: {function}: {why}")]
    Undecoded { name: &'static str, function: &'static str, why: String },
    #[error("{name}: its readers disagree: {found:?}")]
    Disagree { name: &'static str, found: Vec<(&'static str, u64)> },
    #[error("{name}: {address:#x} is not in a writable data segment")]
    NotData { name: &'static str, address: u64 },
}

impl GoBinary {
    /// Where `runtime.gomaxprocs` lives.
    pub fn gomaxprocs_variable(&self) -> Result<RuntimeVariable, VariableError> {
        self.runtime_variable(&GOMAXPROCS)
    }

    /// `.symtab` first; else decoding, for a binary whose Go version is known.
    pub fn runtime_variable(&self, spec: &VariableSpec) -> Result<RuntimeVariable, VariableError> {
        if let Some(address) = self.symtab_variable(spec)? {
            return Ok(RuntimeVariable { address, found_by: FoundBy::Symtab });
        }
        if self.go_version.is_none() {
            return Err(VariableError::UnknownVersion { name: spec.name });
        }
        let address = self.decoded_variable(spec)?;
        Ok(RuntimeVariable { address, found_by: FoundBy::Decoded })
    }

    /// The `.symtab` symbol's address; None without `.symtab` or symbol.
    pub(crate) fn symtab_variable(
        &self,
        spec: &VariableSpec,
    ) -> Result<Option<u64>, VariableError> {
        if !self.image.layout.has_symtab {
            return Ok(None);
        }
        let Some((address, size)) = elf::symtab_object(&self.image.bytes, spec.name) else {
            return Ok(None);
        };
        if size != spec.size {
            return Err(VariableError::WrongSize { name: spec.name, size, expected: spec.size });
        }
        self.check_data(spec, address).map(Some)
    }

    /// The address the readers load from, whether or not `.symtab` exists
    /// (tests compare the two).
    pub(crate) fn decoded_variable(&self, spec: &VariableSpec) -> Result<u64, VariableError> {
        let mut found: Vec<(&'static str, u64)> = Vec::new();
        for &reader in spec.readers {
            let Some(function) = self.function(reader) else { continue };
            let undecoded =
                |why: String| VariableError::Undecoded { name: spec.name, function: reader, why };
            let code = self.function_code(&function).map_err(|e| undecoded(e.to_string()))?;
            let address = first_rip_relative_load32(code, function.address).map_err(undecoded)?;
            found.push((reader, address));
        }
        let Some(&(_, address)) = found.first() else {
            return Err(VariableError::NoReader { name: spec.name, readers: spec.readers });
        };
        if found.iter().any(|&(_, other)| other != address) {
            return Err(VariableError::Disagree { name: spec.name, found });
        }
        self.check_data(spec, address)
    }

    fn check_data(&self, spec: &VariableSpec, address: u64) -> Result<u64, VariableError> {
        if self.image.layout.is_writable_data(address, spec.size) {
            Ok(address)
        } else {
            Err(VariableError::NotData { name: spec.name, address })
        }
    }

    /// `e_entry`, the link-time entry point: with the running one
    /// (`AT_ENTRY`), it gives a PIE's load bias.
    pub fn entry_address(&self) -> u64 {
        self.image.layout.entry
    }
}

/// The address read by the first instruction of `code` (loaded at
/// `address`) that accesses 32 bits at a RIP-relative address, which must be
/// a plain load into a register (`mov r32, m32` or `movsxd r64, m32`);
/// `lea` and accesses of other sizes are passed over.
pub(crate) fn first_rip_relative_load32(code: &[u8], address: u64) -> Result<u64, String> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    for instruction in decoder.iter().take(MAX_INSTRUCTIONS) {
        if instruction.is_invalid() {
            return Err(format!("cannot decode the instruction at {:#x}", instruction.ip()));
        }
        let rip_relative_32 = instruction.is_ip_rel_memory_operand()
            && instruction.mnemonic() != Mnemonic::Lea
            && instruction.memory_size().size() == 4;
        if !rip_relative_32 {
            continue;
        }
        let load = matches!(instruction.mnemonic(), Mnemonic::Mov | Mnemonic::Movsxd)
            && instruction.op_count() == 2
            && instruction.op0_kind() == OpKind::Register
            && instruction.op1_kind() == OpKind::Memory;
        if !load {
            return Err(format!(
                "the first 32-bit RIP-relative access, at {:#x}, is a {:?}, not a load",
                instruction.ip(),
                instruction.mnemonic()
            ));
        }
        return Ok(instruction.ip_rel_memory_address());
    }
    Err(format!("no 32-bit RIP-relative load in the first {MAX_INSTRUCTIONS} instructions"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x414f60;

    #[test]
    fn movsxd_after_lea_and_call_is_the_load() {
        // runtime.GOMAXPROCS, Go 1.27.3 (go tool objdump).
        let code = [
            0x49, 0x3b, 0x66, 0x10, // cmp rsp, [r14+0x10]
            0x0f, 0x86, 0xb5, 0x00, 0x00, 0x00, // jbe
            0x55, // push rbp
            0x48, 0x89, 0xe5, // mov rbp, rsp
            0x48, 0x83, 0xec, 0x28, // sub rsp, 0x28
            0x48, 0x89, 0x44, 0x24, 0x38, // mov [rsp+0x38], rax
            0x90, 0x90, // nop; nop
            0x48, 0x8d, 0x05, 0xc0, 0x0b, 0x16, 0x00, // lea rax, [rip+0x160bc0] (sched.lock)
            0xe8, 0xbb, 0x4a, 0x00, 0x00, // call runtime.lock2
            0x48, 0x63, 0x0d, 0x34, 0xf2, 0x17, 0x00, // movsxd rcx, dword [rip+0x17f234]
        ];
        // The displacement is relative to the end of the movsxd (BASE + 44).
        assert_eq!(first_rip_relative_load32(&code, BASE), Ok(BASE + 44 + 0x17f234));
    }

    #[test]
    fn other_sizes_are_passed_over_and_a_store_is_refused() {
        let code = [
            0x80, 0x3d, 0x10, 0x00, 0x00, 0x00, 0x00, // cmp byte [rip+0x10], 0
            0x48, 0x8b, 0x05, 0x20, 0x00, 0x00, 0x00, // mov rax, qword [rip+0x20]
            0x8b, 0x15, 0x30, 0x00, 0x00, 0x00, // mov edx, dword [rip+0x30]
        ];
        assert_eq!(first_rip_relative_load32(&code, 0x1000), Ok(0x1000 + 20 + 0x30));
        let store = [0x89, 0x05, 0x30, 0x00, 0x00, 0x00]; // mov dword [rip+0x30], eax
        let error = first_rip_relative_load32(&store, 0x1000).unwrap_err();
        assert!(error.contains("not a load"), "{error}");
        let cmp = [0x83, 0x3d, 0x30, 0x00, 0x00, 0x00, 0x00]; // cmp dword [rip+0x30], 0
        assert!(first_rip_relative_load32(&cmp, 0x1000).is_err());
    }

    #[test]
    fn nothing_found_is_an_error_not_a_guess() {
        assert!(first_rip_relative_load32(&[], 0x1000).is_err());
        let nops = [0x90; 64];
        assert!(first_rip_relative_load32(&nops, 0x1000).unwrap_err().contains("first 32"));
        // A load past the window is not taken.
        let mut late = vec![0x90; MAX_INSTRUCTIONS];
        late.extend_from_slice(&[0x8b, 0x15, 0x30, 0x00, 0x00, 0x00]);
        assert!(first_rip_relative_load32(&late, 0x1000).is_err());
        assert!(first_rip_relative_load32(&[0x0f, 0x0b, 0x06], 0x1000).is_err());
    }
}
