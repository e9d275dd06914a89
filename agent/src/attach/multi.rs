//! `uprobe_multi` links (kernel 6.6+) without aya's help.
//!
//! One BPF link carries every point of a probe in a binary, for every
//! process that runs it, and closing it costs one RCU grace period for all
//! of them (23 ms measured here for 100 points) where per-point perf-event
//! uprobes cost ~110 ms *each*, serialised in the kernel. That is what
//! makes stop time and churn independent of the number of processes.
//!
//! aya 0.14 (the newest aya this toolchain builds: 0.15+ needs rustc 1.98)
//! cannot create these links: a program must be loaded with
//! `expected_attach_type = BPF_TRACE_UPROBE_MULTI`, which aya only does from
//! 0.16 on. So the uprobe programs are loaded a second way here: aya-obj
//! (the object parser aya itself uses) applies the CO-RE relocations for
//! this kernel and points the map references at the maps aya already
//! created, and two system calls do the rest (BPF_PROG_LOAD with the attach
//! type, BPF_LINK_CREATE with the points). The tracepoint programs, the maps
//! and the perf-uprobe fallback stay with aya.

use std::{
    collections::HashMap,
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use aya::{Btf, Ebpf};
use aya_obj::generated::bpf_insn;

/// uapi `enum bpf_cmd` and `enum bpf_attach_type` values (stable ABI).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_TRACE_UPROBE_MULTI: u32 = 48;

#[derive(Debug, thiserror::Error)]
pub enum MultiError {
    #[error("parsing the eBPF object: {0}")]
    Parse(#[from] aya_obj::ParseError),
    #[error("CO-RE relocation: {0}")]
    Btf(#[from] aya_obj::btf::BtfRelocationError),
    #[error("relocating map references: {0}")]
    Relocation(#[from] aya_obj::relocation::EbpfRelocationError),
    #[error("map `{0}` of the object was not created by the loader")]
    MissingMap(String),
    #[error("program `{0}` is not in the object")]
    MissingProgram(String),
    #[error("loading {program} as a uprobe_multi program: {source}{log}")]
    Load { program: String, source: std::io::Error, log: String },
    #[error("bpf_link_create(uprobe_multi) on {path} ({points} points): {source}")]
    Link { path: String, points: usize, source: std::io::Error },
}

/// The Go runtime uprobe programs, loaded for `uprobe_multi` links.
pub struct MultiPrograms {
    fds: HashMap<&'static str, OwnedFd>,
}

impl MultiPrograms {
    /// Loads `names` from `object` (the bytes aya loaded into `ebpf`, with
    /// the same load-time `globals`), sharing `ebpf`'s maps.
    pub fn load(
        object: &[u8],
        ebpf: &Ebpf,
        btf: &Btf,
        globals: &[(&str, &[u8])],
        names: &[&'static str],
    ) -> Result<MultiPrograms, MultiError> {
        let mut obj = aya_obj::Object::parse(object)?;
        obj.patch_map_data(globals.iter().map(|&(name, bytes)| (name, (bytes, true))).collect())?;
        obj.relocate_btf(btf)?;
        // relocate_maps borrows obj mutably: take the map definitions out first.
        let mut definitions: Vec<(String, RawFd, aya_obj::Map)> = Vec::new();
        for (name, definition) in &obj.maps {
            let fd = ebpf
                .map(name)
                .and_then(map_fd)
                .ok_or_else(|| MultiError::MissingMap(name.clone()))?;
            definitions.push((name.clone(), fd, definition.clone()));
        }
        let text_sections = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(
            definitions.iter().map(|(name, fd, map)| (name.as_str(), *fd, map)),
            &text_sections,
        )?;
        obj.relocate_calls(&text_sections)?;

        let mut loaded = HashMap::new();
        for &name in names {
            let program =
                obj.programs.get(name).ok_or_else(|| MultiError::MissingProgram(name.into()))?;
            let function = &obj.functions[&program.function_key()];
            let fd = load_program(name, &function.instructions, &obj.license)?;
            loaded.insert(name, fd);
        }
        Ok(MultiPrograms { fds: loaded })
    }

    /// Attaches `program` at every file offset of `points` in `binary`, for
    /// every process that runs it; `cookies` (one per point, or empty) are
    /// what `bpf_get_attach_cookie` returns there. Dropping the returned fd
    /// detaches.
    pub fn attach(
        &self,
        program: &str,
        binary: &Path,
        points: &[u64],
        cookies: &[u64],
    ) -> Result<OwnedFd, MultiError> {
        let fd = self.fds.get(program).ok_or_else(|| MultiError::MissingProgram(program.into()))?;
        link_create(fd.as_raw_fd(), binary, points, cookies)
    }

    /// Whether this kernel creates uprobe_multi links, asked the way libbpf
    /// does: a link on "/" (not a regular file) fails with EBADF where the
    /// attach type is known, and with EINVAL or EOPNOTSUPP where it is not.
    pub fn kernel_supports_links(&self) -> bool {
        let Some(fd) = self.fds.values().next() else { return false };
        match link_create(fd.as_raw_fd(), Path::new("/"), &[0], &[]) {
            Ok(_) => true,
            Err(MultiError::Link { source, .. }) => source.raw_os_error() == Some(libc::EBADF),
            Err(_) => false,
        }
    }
}

/// The fd of one of aya's maps. golens' object declares only the map types
/// matched here; a new type in the object must be added (the privileged
/// tests load every program this way, so a miss shows as MissingMap).
fn map_fd(map: &aya::maps::Map) -> Option<RawFd> {
    use aya::maps::Map;
    use std::os::fd::AsFd;
    let data = match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::RingBuf(d)
        | Map::Unsupported(d) => d,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}

/// uapi `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// uapi `union bpf_attr` for BPF_LINK_CREATE with `uprobe_multi`.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<RawFd> {
    // SAFETY: attr is a properly laid out, zero-initialised bpf_attr prefix
    // that lives across the call; the kernel reads at most size_of::<T>() bytes.
    let ret = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as u32)
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret as RawFd)
}

fn load_program(
    name: &str,
    instructions: &[bpf_insn],
    license: &CString,
) -> Result<OwnedFd, MultiError> {
    let mut prog_name = [0u8; 16];
    for (slot, byte) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte;
    }
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: instructions.len() as u32,
        insns: instructions.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type: BPF_TRACE_UPROBE_MULTI,
        ..Default::default()
    };
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a successful BPF_PROG_LOAD returns a new fd that we own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(first) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 1 << 20];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = sys_bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            let log = if tail.is_empty() {
                String::new()
            } else {
                format!(
                    "\nverifier log (end):\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            };
            Err(MultiError::Load { program: name.into(), source: first, log })
        }
    }
}

fn link_create(
    prog_fd: RawFd,
    binary: &Path,
    points: &[u64],
    cookies: &[u64],
) -> Result<OwnedFd, MultiError> {
    use std::os::unix::ffi::OsStrExt;
    let error = |source| MultiError::Link {
        path: binary.display().to_string(),
        points: points.len(),
        source,
    };
    let path = CString::new(binary.as_os_str().as_bytes())
        .map_err(|e| error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let mut attr = LinkCreateAttr {
        prog_fd: prog_fd as u32,
        attach_type: BPF_TRACE_UPROBE_MULTI,
        path: path.as_ptr() as u64,
        offsets: points.as_ptr() as u64,
        cookies: if cookies.len() == points.len() { cookies.as_ptr() as u64 } else { 0 },
        cnt: points.len() as u32,
        pid: 0, // every process that runs the binary; handlers filter on `tracked`
        ..Default::default()
    };
    let fd = sys_bpf(BPF_LINK_CREATE, &mut attr).map_err(error)?;
    // SAFETY: a successful BPF_LINK_CREATE returns a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_uapi_offsets() {
        // union bpf_attr: expected_attach_type at 68 (after prog_ifindex at 64);
        // link_create.uprobe_multi.pid at 56.
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, path), 16);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, cnt), 48);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, pid), 56);
    }
}
