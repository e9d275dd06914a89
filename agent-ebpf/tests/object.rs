//! The embedded object against the running kernel: every map and program the
//! agent names exists, and every program passes the verifier and attaches.

use aya::{
    programs::{BtfTracePoint, UProbe},
    Btf, EbpfLoader,
};
use golens_ebpf::{maps, programs, syscalls, uprobes, OBJECT};

#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn every_named_map_and_program_loads_and_attaches() {
    let btf = Btf::from_sys_fs().expect("kernel BTF at /sys/kernel/btf/vmlinux");
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .allow_unsupported_maps()
        .load(OBJECT)
        .expect("object loads");
    for name in maps::ALL {
        assert!(ebpf.map(name).is_some(), "map `{name}` missing from the object");
    }
    let all: Vec<_> = programs::ALL.iter().collect();
    assert_eq!(
        all.len()
            + uprobes::ALL.len()
            + 1 // the dispatcher
            + syscalls::ALL.iter().map(|family| family.len()).sum::<usize>(),
        ebpf.programs().count(),
        "a program in the object has no name constant"
    );
    for name in uprobes::ALL.iter().chain([&uprobes::DISPATCH]) {
        let program: &mut UProbe = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("program `{name}` missing"))
            .try_into()
            .expect("uprobe program");
        program.load().unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    for spec in syscalls::ALL.iter().flat_map(|family| family.iter()) {
        let program: &mut aya::programs::TracePoint = ebpf
            .program_mut(spec.program)
            .unwrap_or_else(|| panic!("program `{}` missing", spec.program))
            .try_into()
            .expect("tracepoint program");
        program.load().unwrap_or_else(|e| panic!("{}: {e:?}", spec.program));
    }
    for spec in all {
        let program: &mut BtfTracePoint = ebpf
            .program_mut(spec.program)
            .unwrap_or_else(|| panic!("program `{}` missing", spec.program))
            .try_into()
            .expect("tp_btf program");
        program.load(spec.tracepoint, &btf).unwrap_or_else(|e| panic!("{}: {e:?}", spec.program));
        program.attach().unwrap_or_else(|e| panic!("{}: {e}", spec.program));
    }
}

#[test]
fn shared_struct_sizes_match_the_header() {
    // bindgen already asserts these at compile time; this states the contract plainly.
    assert_eq!(std::mem::size_of::<golens_ebpf::Hist>(), 8 * (golens_ebpf::HIST_SLOTS + 2));
    assert_eq!(
        std::mem::size_of::<golens_ebpf::SchedStats>(),
        std::mem::size_of::<golens_ebpf::Hist>() + 16
    );
    assert_eq!(std::mem::size_of::<golens_ebpf::ProcEvent>(), 32);
    assert_eq!(std::mem::size_of::<golens_ebpf::BinaryKey>(), 16);
}

#[test]
fn program_names_fit_the_kernels_15_characters_and_stay_unique() {
    // The kernel keeps BPF_OBJ_NAME_LEN - 1 = 15 characters of a program name
    // (bpftool prog, bpf_stats): longer names would be cut and could collide.
    let names: Vec<&str> = programs::ALL
        .iter()
        .map(|p| p.program)
        .chain(uprobes::ALL.iter().copied())
        .chain([uprobes::DISPATCH])
        .chain(syscalls::ALL.iter().flat_map(|f| f.iter()).map(|p| p.program))
        .collect();
    for name in &names {
        assert!(name.len() <= 15, "{name} is longer than 15 characters");
        assert!(name.starts_with("golens_"), "{name}: the prefix tells whose program it is");
    }
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "duplicate program names: {names:?}");
}

#[test]
fn every_uprobe_program_has_a_dispatch_cookie() {
    let mut cookies: Vec<u64> =
        uprobes::ALL.iter().map(|p| uprobes::cookie(p).expect("cookie")).collect();
    cookies.sort_unstable();
    cookies.dedup();
    assert_eq!(cookies.len(), uprobes::ALL.len(), "cookies are distinct");
    assert!(!cookies.contains(&0), "0 is what a point without a cookie reads");
}

/// A map declared with one entry per watched process must be sized by
/// --max-processes at load time: it is in `maps::PER_PROCESS`. (One that was
/// not capped golens at 256 processes whatever --max-processes said.)
#[test]
#[ignore = "privileged: loads eBPF programs; run `cargo xtask test` as root"]
fn every_map_with_an_entry_per_process_is_sized_by_max_processes() {
    use aya::maps::Map;
    let btf = Btf::from_sys_fs().expect("kernel BTF at /sys/kernel/btf/vmlinux");
    let ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .allow_unsupported_maps()
        .load(OBJECT)
        .expect("object loads");
    for name in maps::ALL {
        let data = match ebpf.map(name).unwrap_or_else(|| panic!("map `{name}` missing")) {
            Map::HashMap(d)
            | Map::PerCpuHashMap(d)
            | Map::LruHashMap(d)
            | Map::Array(d)
            | Map::PerCpuArray(d)
            | Map::RingBuf(d)
            | Map::Unsupported(d) => d,
            other => panic!("map `{name}` of an unexpected type: {other:?}"),
        };
        let entries = data.info().expect("map info").max_entries();
        if entries == golens_ebpf::bindings::GOLENS_MAX_TRACKED_DEFAULT {
            assert!(
                maps::PER_PROCESS.contains(name),
                "`{name}` has an entry per process: list it in maps::PER_PROCESS"
            );
        }
    }
}
