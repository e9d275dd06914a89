//! Where to put uprobes in a Go function, found by decoding its machine code (x86-64).
//!
//! Entry: never the first byte. Go functions open with the stack-bound check
//! (`cmp rsp, [r14+0x10]`, or `lea r12, [rsp-N]; cmp r12, [r14+0x10]`, or for frames over 4 KiB
//! `mov r12, rsp; sub r12, N; jb morestack; cmp r12, [r14+0x10]`) followed by a conditional
//! branch to the morestack call at the function's end. The kernel cannot emulate `cmp`/`lea`,
//! so a uprobe there is single-stepped out of line (14-17 µs per hit measured in our VM), while
//! a Jcc is emulated (0.4-1.1 µs) and the register arguments are still untouched there. So the
//! entry probe goes on that branch.
//!
//! Double hits: when the stack must grow, the branch is taken to a block that calls
//! `runtime.morestack*` and then jumps back to the function's first byte, so the entry branch
//! runs (and the probe fires) a second time for the same call. `EntryProbe::morestack_address`
//! is that block; the caller decides how to deduplicate.
//!
//! Return: uretprobes are forbidden on Go (moving stacks), so every `RET` gets a uprobe. `RET`
//! is single-stepped: keep return probes on rare functions.

use iced_x86::{
    Code, ConditionCode, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind,
    Register,
};

use super::elf::AddressError;

/// A place to attach a uprobe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePoint {
    /// Link-time virtual address of the instruction.
    pub address: u64,
    /// Offset in the ELF file: what `uprobe` attach takes.
    pub file_offset: u64,
}

/// The entry probe of a function: its stack-check branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryProbe {
    pub point: ProbePoint,
    /// Where the branch goes when the stack must grow: the morestack call block, after which
    /// the function restarts and `point` is hit again.
    pub morestack_address: u64,
    /// The check compares with `g.stackguard1` (`[g+0x18]`): a `//go:systemstack` function
    /// (e.g. `runtime.stopTheWorldWithSema` since Go 1.21). Its morestack block calls
    /// `runtime.morestackc`, which throws, so its entry branch is never hit twice.
    pub system_stack: bool,
    /// The branch's condition: with it, a probe tells the hit that goes to morestack (to be
    /// ignored: the function restarts and the branch is hit again) from the one that does not.
    pub condition: StackCheckCondition,
}

/// The stack-check branch found in a function's code, before file offsets are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryBranch {
    pub address: u64,
    pub morestack_address: u64,
    /// See `EntryProbe::system_stack`.
    pub system_stack: bool,
    /// See `EntryProbe::condition`.
    pub condition: StackCheckCondition,
}

/// Which unsigned comparison the stack-check branch takes to morestack. A probe on the branch
/// sees the flags of the comparison, so it can tell whether this hit is the one that goes to
/// morestack (and will be followed by a second hit when the function restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackCheckCondition {
    /// `jbe`: taken when CF or ZF is set (the usual `cmp sp, stackguard; jbe`).
    BelowOrEqual,
    /// `jb`: taken when CF is set (huge frames: `sub $frame, r12; jb`).
    Below,
}

/// Why no probe point could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "{function} at {address:#x}: no stack-bound check in its first instructions \
         (a NOSPLIT function?): {found}; attaching at its first byte would be single-stepped"
    )]
    NoStackCheck { function: String, address: u64, found: String },
    #[error(
        "{function}: stack-check branch at {branch:#x} goes to {target:#x}, outside the function"
    )]
    BranchOutsideFunction { function: String, branch: u64, target: u64 },
    #[error("{function}: cannot decode the instruction at {address:#x}")]
    Undecodable { function: String, address: u64 },
    #[error("{function}: {source}")]
    Address { function: String, source: AddressError },
}

/// How many instructions (after an optional ENDBR64) the stack check may take to reach its
/// branch. The longest Go form is 4 (`mov; sub; jb`) plus a TLS load of `g` before Go 1.17.
const MAX_PROLOGUE_INSTRUCTIONS: usize = 6;

/// Finds the stack-check conditional branch of a Go function whose code (at least its first
/// few dozen bytes; the whole function lets the morestack target be checked) is `code`,
/// loaded at `address`.
pub fn find_entry_branch(
    function: &str,
    code: &[u8],
    address: u64,
) -> Result<EntryBranch, ProbeError> {
    let end = address.saturating_add(code.len() as u64);
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut seen = Vec::new();
    let mut stack_check = false;
    let mut system_stack = false;
    let no_check = |seen: &[Code], why: &str| ProbeError::NoStackCheck {
        function: function.to_string(),
        address,
        found: format!("{why} (decoded {seen:?})"),
    };

    while decoder.can_decode() && seen.len() < MAX_PROLOGUE_INSTRUCTIONS {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return Err(ProbeError::Undecodable {
                function: function.to_string(),
                address: instruction.ip(),
            });
        }
        if instruction.code() == Code::Endbr64 && seen.is_empty() {
            continue; // CET landing pad (GOAMD64/cgo builds): not part of the check.
        }
        seen.push(instruction.code());
        if instruction.is_jcc_short_or_near() {
            let unsigned_below =
                matches!(instruction.condition_code(), ConditionCode::be | ConditionCode::b);
            if !stack_check || !unsigned_below {
                return Err(no_check(&seen, "a conditional branch that is not the stack check"));
            }
            let target = instruction.near_branch_target();
            if target <= instruction.ip() || target >= end {
                return Err(ProbeError::BranchOutsideFunction {
                    function: function.to_string(),
                    branch: instruction.ip(),
                    target,
                });
            }
            let condition = if instruction.condition_code() == ConditionCode::be {
                StackCheckCondition::BelowOrEqual
            } else {
                StackCheckCondition::Below
            };
            return Ok(EntryBranch {
                address: instruction.ip(),
                morestack_address: target,
                system_stack,
                condition,
            });
        }
        match prologue_step(&instruction) {
            PrologueStep::Check => {
                stack_check = true;
                system_stack |= instruction.mnemonic() == Mnemonic::Cmp
                    && instruction.memory_displacement64() == 0x18;
            }
            PrologueStep::Setup => {}
            PrologueStep::Other => {
                return Err(no_check(&seen, "the function body starts before any stack check"))
            }
        }
    }
    Err(no_check(&seen, "no conditional branch"))
}

enum PrologueStep {
    /// Compares the (adjusted) stack pointer with `g.stackguard0/1`, or subtracts the frame
    /// size from it (huge frames: the `jb` that follows catches wrap-around).
    Check,
    /// Loads `g` from TLS (Go < 1.17) or copies/adjusts the stack pointer into the temporary.
    Setup,
    Other,
}

fn prologue_step(instruction: &Instruction) -> PrologueStep {
    let op0_reg =
        |r: Register| instruction.op0_kind() == OpKind::Register && instruction.op0_register() == r;
    match instruction.mnemonic() {
        // cmp rsp|r12, [g+0x10] (stackguard0) or [g+0x18] (stackguard1, for C-callable funcs).
        Mnemonic::Cmp
            if (op0_reg(Register::RSP) || op0_reg(Register::R12))
                && instruction.op1_kind() == OpKind::Memory
                && matches!(instruction.memory_displacement64(), 0x10 | 0x18) =>
        {
            PrologueStep::Check
        }
        Mnemonic::Sub if op0_reg(Register::R12) && instruction.op1_kind() != OpKind::Register => {
            PrologueStep::Check
        }
        Mnemonic::Lea if op0_reg(Register::R12) && instruction.memory_base() == Register::RSP => {
            PrologueStep::Setup
        }
        Mnemonic::Mov if op0_reg(Register::R12) && instruction.op1_register() == Register::RSP => {
            PrologueStep::Setup
        }
        // mov rcx, fs:[-8]: `g` from thread-local storage, before the register ABI.
        Mnemonic::Mov
            if instruction.op1_kind() == OpKind::Memory
                && instruction.memory_segment() == Register::FS =>
        {
            PrologueStep::Setup
        }
        _ => PrologueStep::Other,
    }
}

/// Addresses of every `RET` in `code` (a whole function loaded at `address`), decoding
/// linearly: Go puts no data inside a function's text and pads between functions with INT3.
/// Returns through tail calls (`jmp` to another function) are not returns and are not listed.
pub fn find_returns(function: &str, code: &[u8], address: u64) -> Result<Vec<u64>, ProbeError> {
    find_instructions(function, code, address, is_return)
}

/// Addresses of the direct `CALL`s to `callee` in `code` (a whole function loaded at
/// `address`). A uprobe on such a call site counts the calls made from this function only.
pub fn find_call_sites(
    function: &str,
    code: &[u8],
    address: u64,
    callee: u64,
) -> Result<Vec<u64>, ProbeError> {
    find_instructions(function, code, address, |instruction| {
        instruction.is_call_near() && instruction.near_branch_target() == callee
    })
}

/// The last conditional branch before the function's first `RET` whose taken side calls
/// `callee` within a few instructions: for `callee = runtime.throw`, the final sanity check
/// of a function (`if bad != "" { throw(bad) }`), i.e. the function's last moment before it
/// returns, at an instruction the kernel emulates (the `RET` itself is single-stepped).
pub fn find_branch_to_call_before_return(
    function: &str,
    code: &[u8],
    address: u64,
    callee: u64,
) -> Result<Option<u64>, ProbeError> {
    /// How far from the branch target the call may be (argument set-up).
    const BLOCK: usize = 8;
    let instructions = decode_all(function, code, address)?;
    let Some(ret) = instructions.iter().position(is_return) else { return Ok(None) };
    let calls_callee_from = |target: u64| {
        let Some(start) = instructions.iter().position(|i| i.ip() == target) else {
            return false;
        };
        for instruction in instructions[start..].iter().take(BLOCK) {
            if instruction.is_call_near() {
                return instruction.near_branch_target() == callee;
            }
            if !matches!(instruction.flow_control(), FlowControl::Next) {
                return false;
            }
        }
        false
    };
    Ok(instructions[..ret]
        .iter()
        .rev()
        .find(|i| i.is_jcc_short_or_near() && calls_callee_from(i.near_branch_target()))
        .map(Instruction::ip))
}

fn decode_all(function: &str, code: &[u8], address: u64) -> Result<Vec<Instruction>, ProbeError> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instructions = Vec::new();
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            return Err(ProbeError::Undecodable {
                function: function.to_string(),
                address: instruction.ip(),
            });
        }
        instructions.push(instruction);
    }
    Ok(instructions)
}

/// Decodes a whole function linearly and returns the addresses of the
/// instructions `wanted` accepts; an undecodable byte is an error, not a skip.
fn find_instructions(
    function: &str,
    code: &[u8],
    address: u64,
    wanted: impl Fn(&Instruction) -> bool,
) -> Result<Vec<u64>, ProbeError> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut found = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return Err(ProbeError::Undecodable {
                function: function.to_string(),
                address: instruction.ip(),
            });
        }
        if wanted(&instruction) {
            found.push(instruction.ip());
        }
    }
    Ok(found)
}

/// Whether `code` (loaded at `address`) contains a direct call or jump to one of `targets`:
/// how an ABI0 wrapper is told from the function it wraps.
pub(crate) fn branches_to_any(code: &[u8], address: u64, targets: &[u64]) -> bool {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    decoder.iter().any(|i| {
        (i.is_call_near() || i.is_jmp_short_or_near()) && targets.contains(&i.near_branch_target())
    })
}

pub fn is_return(instruction: &Instruction) -> bool {
    instruction.mnemonic() == Mnemonic::Ret
}

/// Whether the x86 uprobe code emulates this instruction (cheap) instead of single-stepping a
/// copy of it out of line (expensive). From `arch/x86/kernel/uprobes.c`: relative CALL/JMP/Jcc
/// (`branch_setup_xol_ops`), NOP (0x90; multi-byte NOP since Linux 6.12), PUSH of a register
/// (`push_setup_xol_ops`, Linux 6.8). Conservative: anything else (cmp, lea, mov, ret,
/// indirect branches, jrcxz/loop) counts as single-stepped. (The kernel also refuses branches
/// with a 0x66 prefix; the Go compiler never emits one.)
pub fn is_kernel_emulated(instruction: &Instruction) -> bool {
    let relative = instruction.op0_kind() == OpKind::NearBranch64;
    match instruction.flow_control() {
        FlowControl::ConditionalBranch => instruction.is_jcc_short_or_near() && relative,
        FlowControl::UnconditionalBranch => instruction.is_jmp_short_or_near() && relative,
        FlowControl::Call => instruction.is_call_near() && relative,
        FlowControl::Next => match instruction.mnemonic() {
            Mnemonic::Nop => true,
            Mnemonic::Push => instruction.code() == Code::Push_r64,
            _ => false,
        },
        _ => false,
    }
}

/// Decodes the single instruction at the start of `code` (at `address`).
pub fn decode_one(code: &[u8], address: u64) -> Option<Instruction> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    if !decoder.can_decode() {
        return None;
    }
    let instruction = decoder.decode();
    (!instruction.is_invalid()).then_some(instruction)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x425fc0;

    /// Prologue + body + morestack block, as the Go 1.21+ compiler emits for a small frame.
    fn small_frame() -> Vec<u8> {
        let mut code = vec![
            0x49, 0x3b, 0x66, 0x10, // cmp rsp, [r14+0x10]
            0x76, 0x0a, // jbe +10 -> morestack block
            0x55, // push rbp
            0x48, 0x89, 0xe5, // mov rbp, rsp
            0x5d, // pop rbp
            0xc3, // ret
            0x90, 0x90, 0x90, 0x90, // nops to reach the morestack block
            0xe8, 0, 0, 0, 0, // call runtime.morestack_noctxt
            0xeb, 0xe9, // jmp to function start
        ];
        code.extend_from_slice(&[0xcc; 9]); // INT3 padding
        code
    }

    #[test]
    fn small_frame_branch_is_the_jbe() {
        let code = small_frame();
        let branch = find_entry_branch("f", &code, BASE).unwrap();
        assert_eq!(
            branch,
            EntryBranch {
                address: BASE + 4,
                morestack_address: BASE + 16,
                system_stack: false,
                condition: StackCheckCondition::BelowOrEqual,
            }
        );
        let jbe = decode_one(&code[4..], BASE + 4).unwrap();
        assert!(jbe.is_jcc_short_or_near() && is_kernel_emulated(&jbe));
        assert_eq!(find_returns("f", &code, BASE).unwrap(), vec![BASE + 11]);
    }

    #[test]
    fn large_frame_lea_cmp_jbe_near() {
        let code = [
            0x4c, 0x8d, 0xa4, 0x24, 0x70, 0xff, 0xff, 0xff, // lea r12, [rsp-0x90]
            0x4d, 0x3b, 0x66, 0x10, // cmp r12, [r14+0x10]
            0x0f, 0x86, 0x10, 0x00, 0x00, 0x00, // jbe +0x10 (rel32)
            0xc3, // ret
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // body
            0xe8, 0, 0, 0, 0, // call morestack
        ];
        let branch = find_entry_branch("f", &code, BASE).unwrap();
        assert_eq!(
            branch,
            EntryBranch {
                address: BASE + 12,
                morestack_address: BASE + 18 + 0x10,
                system_stack: false,
                condition: StackCheckCondition::BelowOrEqual,
            }
        );
    }

    #[test]
    fn systemstack_function_compares_with_stackguard1() {
        let code = [
            0x4c, 0x8d, 0x64, 0x24, 0xd8, // lea r12, [rsp-0x28]
            0x4d, 0x3b, 0x66, 0x18, // cmp r12, [r14+0x18]
            0x76, 0x01, // jbe +1
            0xc3, // ret
            0xe8, 0, 0, 0, 0, // call runtime.morestackc
        ];
        let branch = find_entry_branch("f", &code, BASE).unwrap();
        assert_eq!(
            branch,
            EntryBranch {
                address: BASE + 9,
                morestack_address: BASE + 12,
                system_stack: true,
                condition: StackCheckCondition::BelowOrEqual,
            }
        );
    }

    #[test]
    fn huge_frame_first_branch_is_the_jb() {
        let code = [
            0x49, 0x89, 0xe4, // mov r12, rsp
            0x49, 0x81, 0xec, 0x00, 0x20, 0x00, 0x00, // sub r12, 0x2000
            0x72, 0x08, // jb +8
            0x4d, 0x3b, 0x66, 0x10, // cmp r12, [r14+0x10]
            0x76, 0x02, // jbe +2
            0xc3, 0xcc, // ret; int3
            0xe8, 0, 0, 0, 0, // call morestack
        ];
        let branch = find_entry_branch("f", &code, BASE).unwrap();
        assert_eq!(
            branch,
            EntryBranch {
                address: BASE + 10,
                morestack_address: BASE + 20,
                system_stack: false,
                condition: StackCheckCondition::Below,
            }
        );
    }

    #[test]
    fn endbr64_and_tls_g_load_are_skipped() {
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, // endbr64
            0x64, 0x48, 0x8b, 0x0c, 0x25, 0xf8, 0xff, 0xff, 0xff, // mov rcx, fs:[-8]
            0x48, 0x3b, 0x61, 0x10, // cmp rsp, [rcx+0x10]
            0x76, 0x01, // jbe +1
            0xc3, // ret
            0xe8, 0, 0, 0, 0,
        ];
        let branch = find_entry_branch("f", &code, BASE).unwrap();
        assert_eq!(branch.address, BASE + 17);
        assert_eq!(branch.morestack_address, BASE + 20);
    }

    #[test]
    fn nosplit_function_is_an_error_not_a_guess() {
        // runtime.nanotime1-like: starts with push rbp / mov rbp, rsp.
        let code = [0x55, 0x48, 0x89, 0xe5, 0x48, 0x85, 0xc0, 0x74, 0x01, 0x5d, 0xc3];
        let err = find_entry_branch("runtime.nanotime1", &code, BASE).unwrap_err();
        assert!(matches!(err, ProbeError::NoStackCheck { .. }), "{err}");
        assert!(err.to_string().contains("NOSPLIT"));
        // A Jcc that is not preceded by a stack check.
        let code = [0x48, 0x85, 0xc0, 0x74, 0x01, 0xc3, 0xc3];
        assert!(matches!(
            find_entry_branch("f", &code, BASE),
            Err(ProbeError::NoStackCheck { .. })
        ));
        // A stack check followed by the wrong kind of branch (je).
        let code = [0x49, 0x3b, 0x66, 0x10, 0x74, 0x01, 0xc3, 0xc3];
        assert!(matches!(
            find_entry_branch("f", &code, BASE),
            Err(ProbeError::NoStackCheck { .. })
        ));
        // Branch leaving the function.
        let code = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x40, 0xc3];
        assert!(matches!(
            find_entry_branch("f", &code, BASE),
            Err(ProbeError::BranchOutsideFunction { .. })
        ));
        // Empty and cut-off code.
        assert!(find_entry_branch("f", &[], BASE).is_err());
        assert!(find_entry_branch("f", &[0x49, 0x3b], BASE).is_err());
    }

    #[test]
    fn wrapper_detection_by_direct_branch() {
        // sub rsp,8; call +0x100 (-> 0x1109); add rsp,8; ret
        let wrapper =
            [0x48, 0x83, 0xec, 0x08, 0xe8, 0x00, 0x01, 0x00, 0x00, 0x48, 0x83, 0xc4, 0x08, 0xc3];
        assert!(branches_to_any(&wrapper, 0x1000, &[0x1109]));
        assert!(!branches_to_any(&wrapper, 0x1000, &[0x2000]));
        // jmp rel32 tail call.
        assert!(branches_to_any(&[0xe9, 0xfb, 0x00, 0x00, 0x00], 0x1000, &[0x1100]));
        assert!(!branches_to_any(&[], 0x1000, &[0x1000]));
    }

    #[test]
    fn several_returns_and_ret_imm() {
        let code = [0xc3, 0x90, 0xc2, 0x08, 0x00, 0x0f, 0x1f, 0x00, 0xc3, 0xcc, 0xcc];
        assert_eq!(find_returns("f", &code, 0x1000).unwrap(), vec![0x1000, 0x1002, 0x1008]);
        // Bytes that are not an instruction are an error rather than a misaligned probe.
        assert!(matches!(
            find_returns("f", &[0x0f, 0x0b, 0x06], 0x1000),
            Err(ProbeError::Undecodable { .. })
        ));
        assert_eq!(find_returns("f", &[], 0x1000).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn classification_of_emulated_instructions() {
        let emulated: &[&[u8]] = &[
            &[0x76, 0x05],                   // jbe rel8
            &[0x0f, 0x86, 0, 1, 0, 0],       // jbe rel32
            &[0x72, 0x05],                   // jb rel8
            &[0xeb, 0x05],                   // jmp rel8
            &[0xe9, 0, 1, 0, 0],             // jmp rel32
            &[0xe8, 0, 1, 0, 0],             // call rel32
            &[0x90],                         // nop
            &[0x0f, 0x1f, 0x44, 0x00, 0x00], // nop dword [rax+rax]
            &[0x55],                         // push rbp
            &[0x41, 0x56],                   // push r14
        ];
        for bytes in emulated {
            let instruction = decode_one(bytes, 0x1000).unwrap();
            assert!(is_kernel_emulated(&instruction), "{bytes:x?} {:?}", instruction.code());
        }
        let stepped: &[&[u8]] = &[
            &[0x49, 0x3b, 0x66, 0x10],       // cmp rsp, [r14+0x10]
            &[0x4c, 0x8d, 0x64, 0x24, 0xf0], // lea r12, [rsp-0x10]
            &[0x48, 0x89, 0xe5],             // mov rbp, rsp
            &[0xc3],                         // ret
            &[0xff, 0xd0],                   // call rax
            &[0xff, 0xe0],                   // jmp rax
            &[0xf3, 0x0f, 0x1e, 0xfa],       // endbr64
            &[0xcc],                         // int3
            &[0xe3, 0x05],                   // jrcxz
        ];
        for bytes in stepped {
            let instruction = decode_one(bytes, 0x1000).unwrap();
            assert!(!is_kernel_emulated(&instruction), "{bytes:x?} {:?}", instruction.code());
        }
    }
}
