//! Entry points of the fuzz targets (`agent/fuzz/`): each takes arbitrary
//! bytes, as a hostile or corrupt binary would give them, and must return
//! without panicking, looping or reading out of bounds. The unit tests below
//! run them over real binaries and their truncations, so they also guard
//! the harness on stable Rust.

use std::path::Path;

use super::{buildinfo, pclntab, GoBinary};

/// Runtime functions the agent looks up: the lookups and decodings it does.
const FUNCTIONS: &[&str] = &[
    "runtime.gcResetMarkState",
    "runtime.gcMarkTermination",
    "runtime.stopTheWorldWithSema",
    "runtime.startTheWorldWithSema",
    "runtime.retake",
    "runtime.preemptone",
    "main.main",
];

/// A whole executable: ELF layout, build info, pclntab, function lookups,
/// attach-point decoding, the probe plan and the runtime variables' addresses.
pub fn go_binary(data: &[u8]) {
    let Ok(binary) = GoBinary::from_bytes(Path::new("fuzz-input"), data.to_vec()) else { return };
    for name in FUNCTIONS {
        if let Some(function) = binary.function(name) {
            let _ = binary.file_offset(function.address);
            let _ = binary.entry_probe_offset(&function);
            let _ = binary.return_offsets(&function);
        }
    }
    let _ = crate::goruntime::plan::plan(&binary, crate::goruntime::UprobeFamily::ALL);
    let _ = binary.gomaxprocs_variable();
    let _ = binary.decoded_variable(&super::runtime_variables::GOMAXPROCS);
}

/// The contents of a `.go.buildinfo` section; pointers (pre-1.18 format)
/// resolve into the same bytes, as if the section were loaded at 0.
pub fn buildinfo(data: &[u8]) {
    let read_loaded = |address: u64, len: u64| {
        let start = usize::try_from(address).ok()?;
        data.get(start..start.checked_add(usize::try_from(len).ok()?)?)
    };
    if let Some(info) = buildinfo::parse(data, read_loaded) {
        let _ = info.module_path();
    }
}

/// A `.gopclntab`: header, function table rows, name lookups.
pub fn pclntab(data: &[u8]) {
    let Ok(header) = pclntab::PclnHeader::parse(data) else { return };
    let table = pclntab::FuncTable::new(data, header, 0x40_1000);
    for index in 0..64 {
        let _ = table.get(index);
    }
    let _ = table.find_all("runtime.gcResetMarkState");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gobinary::go_toolchain::{GoToolchain, Variant};

    /// The harness over real binaries of every variant, whole and cut short
    /// at many lengths (where parsers most often trip).
    #[test]
    fn harness_survives_real_and_truncated_binaries() {
        let toolchain = GoToolchain::from_env().remove(0);
        for variant in Variant::ALL {
            let bytes = std::fs::read(toolchain.build(variant)).unwrap();
            go_binary(&bytes);
            for cut in [0, 4, 64, 512, 4096, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
                go_binary(&bytes[..cut]);
                buildinfo(&bytes[..cut]);
                pclntab(&bytes[cut..]);
            }
        }
    }
}
