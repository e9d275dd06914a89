//! Reading a Go runtime global variable (`runtime.gomaxprocs`) from a running
//! process, at collection time: one `pread` of `/proc/PID/mem` at the
//! variable's address. Nothing runs in the target (no probe, no trap).
//!
//! The address is the binary's link-time address (`gobinary`: `.symtab`, or
//! decoding) plus the process's load bias: 0 for a non-PIE executable; for a
//! PIE, where the kernel mapped it, i.e. the running entry point (`AT_ENTRY`
//! of `/proc/PID/auxv`) minus the file's `e_entry`. The auxiliary vector is
//! used rather than `/proc/PID/maps` because it names no file: a binary
//! deleted since, or seen in another mount namespace, needs no path matching.
//!
//! Opening `/proc/PID/mem` needs ptrace access in attach mode
//! (`PTRACE_MODE_ATTACH`: CAP_SYS_PTRACE, or the same user and not more
//! privileged, and under Yama `ptrace_scope` >= 1 CAP_SYS_PTRACE or being
//! the target's ancestor); `/proc/PID/environ`, which the fallback reads,
//! needs read mode only. Callers fall back when it fails.

use std::{fs::File, io, os::unix::fs::FileExt};

use crate::discovery::procfs::proc_root;

/// `AT_ENTRY` in the auxiliary vector: the program's entry point as loaded.
const AT_ENTRY: u64 = 9;
const AT_NULL: u64 = 0;

/// The load bias of `pid`'s executable, whose link-time entry point is
/// `link_entry` (0 for a non-PIE, which the kernel maps where it was linked).
pub fn load_bias(pid: u32, pie: bool, link_entry: u64) -> io::Result<u64> {
    if !pie {
        return Ok(0);
    }
    let path = proc_root().join(format!("{pid}/auxv"));
    let auxv = std::fs::read(&path)?;
    let entry = auxv_value(&auxv, AT_ENTRY).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: no AT_ENTRY", path.display()))
    })?;
    entry.checked_sub(link_entry).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("AT_ENTRY {entry:#x} below the file's entry point {link_entry:#x}"),
        )
    })
}

/// The value of `key` in an auxiliary vector (native-endian u64 pairs, ended by `AT_NULL`).
fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    let word = |bytes: &[u8]| u64::from_ne_bytes(bytes.try_into().expect("8 bytes"));
    for pair in auxv.chunks_exact(16) {
        let (kind, value) = (word(&pair[..8]), word(&pair[8..]));
        if kind == AT_NULL {
            break;
        }
        if kind == key {
            return Some(value);
        }
    }
    None
}

/// The `i32` at `address` in `pid`'s memory.
pub fn read_i32(pid: u32, address: u64) -> io::Result<i32> {
    let mem = File::open(proc_root().join(format!("{pid}/mem")))?;
    let mut bytes = [0u8; 4];
    mem.read_exact_at(&mut bytes, address)?;
    Ok(i32::from_ne_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auxv(pairs: &[(u64, u64)]) -> Vec<u8> {
        pairs.iter().flat_map(|&(k, v)| [k.to_ne_bytes(), v.to_ne_bytes()]).flatten().collect()
    }

    #[test]
    fn entry_from_the_auxiliary_vector() {
        let vector = auxv(&[(33, 0x7fff0000), (6, 4096), (9, 0x5555_5555_a000), (0, 0)]);
        assert_eq!(auxv_value(&vector, AT_ENTRY), Some(0x5555_5555_a000));
        // After AT_NULL nothing counts; a cut-off pair is ignored.
        let vector = auxv(&[(6, 4096), (0, 0), (9, 0x1000)]);
        assert_eq!(auxv_value(&vector, AT_ENTRY), None);
        assert_eq!(auxv_value(&vector[..20], 6), Some(4096));
        assert_eq!(auxv_value(&[], AT_ENTRY), None);
    }

    /// This very process: a PIE (cargo's default) whose bias turns the link-time
    /// address of a static into the running one; a non-PIE has no bias.
    #[test]
    fn own_memory_through_proc() {
        static MARKER: i32 = 0x1234_5678;
        let pid = std::process::id();
        let address = std::ptr::addr_of!(MARKER) as u64;
        assert_eq!(read_i32(pid, address).unwrap(), 0x1234_5678);
        assert_eq!(load_bias(pid, false, 0x401000).unwrap(), 0);
        let auxv = std::fs::read(format!("/proc/{pid}/auxv")).unwrap();
        let entry = auxv_value(&auxv, AT_ENTRY).unwrap();
        assert_eq!(load_bias(pid, true, 0x1000).unwrap(), entry - 0x1000);
        assert!(load_bias(pid, true, u64::MAX).is_err(), "an entry below the file's");
        assert!(read_i32(pid, 0).is_err(), "an unmapped address");
        assert!(read_i32(u32::MAX, address).is_err(), "no such process");
    }
}
