//! Planning the runtime probes of one Go binary: which table row applies, and
//! at which file offsets its uprobes go. Pure (no kernel): testable on any
//! Go binary.

use crate::gobinary::{
    decode_one, is_kernel_emulated, Function, GoBinary, ProbePoint, StackCheckCondition,
};
use crate::snapshot::ProbeStatus;

use super::{
    probe_names, GoVersion, RuntimeProbe, Site, UprobeFamily, NEWEST_TESTED, OLDEST_SUPPORTED,
    RUNTIME_PROBES,
};

/// One probe of one binary: where it goes, or why it cannot.
#[derive(Debug, Clone)]
pub struct PlannedProbe {
    pub name: &'static str,
    pub program: &'static str,
    pub function: &'static str,
    pub points: Result<Vec<ProbePoint>, String>,
    /// Where on the function the points are (the row's site or its fallback).
    pub site: Option<Site>,
}

impl PlannedProbe {
    /// The status of this probe once `outcome` (points attached, or why not) is known:
    /// the plan's own outcome for `golens list`, the attach's for the agent.
    pub fn status(&self, outcome: Result<usize, String>) -> ProbeStatus {
        ProbeStatus {
            probe: self.name.to_string(),
            function: self.function.to_string(),
            attached: outcome.is_ok(),
            points: *outcome.as_ref().unwrap_or(&0),
            reason: outcome.err(),
            site: self.site.map(|site| site.describe()),
            single_stepped: self.site == Some(Site::Returns),
        }
    }
}

/// A probe `DerivedFrom` another has that one's outcome: attached when it
/// is, not attached (saying why) when it is not. `outcomes` follow `probes`.
pub fn resolve_derived(probes: &[PlannedProbe], outcomes: &mut [Result<usize, String>]) {
    for index in 0..probes.len() {
        let Some(Site::DerivedFrom(source)) = probes[index].site else { continue };
        let source_outcome = probes
            .iter()
            .position(|p| p.name == source)
            .map(|at| outcomes[at].clone())
            .unwrap_or_else(|| Err(format!("{source} is not in the plan")));
        outcomes[index] = match source_outcome {
            Ok(_) => Ok(0),
            Err(reason) => Err(format!("measured by {source}, which is not attached: {reason}")),
        };
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub probes: Vec<PlannedProbe>,
    /// Said once per binary in the log (unknown or untested Go version).
    pub warning: Option<String>,
}

/// The probes of `families` for one binary.
pub fn plan(binary: &GoBinary, families: &[UprobeFamily]) -> Plan {
    let version = binary.go_version.as_deref().and_then(GoVersion::parse);
    let warning = match version {
        None => Some(format!(
            "Go version unknown ({}): probing the runtime functions that exist; \
             stop-the-world reasons are reported as unknown",
            binary.go_version.as_deref().unwrap_or("no build info")
        )),
        Some(v) if v > NEWEST_TESTED => Some(format!(
            "{v} is newer than the newest Go golens was tested with ({NEWEST_TESTED}); \
             probing it as {NEWEST_TESTED}"
        )),
        _ => None,
    };
    let probes = probe_names(families)
        .into_iter()
        .map(|name| {
            let row = choose_row(name, version);
            let points = match (version, row) {
                (Some(v), _) if v < OLDEST_SUPPORTED => Err(format!(
                    "{v} predates the register calling convention (Go {OLDEST_SUPPORTED}); not probed"
                )),
                (None, None) => Err("reads a register argument, whose meaning needs a known Go \
                                     version (register ABI: Go 1.17+); not probed"
                    .to_string()),
                (_, None) => Err("no probe defined for this Go version".to_string()),
                (_, Some(row)) => points(binary, row),
            };
            let (points, site) = match points {
                Ok((points, site)) => (Ok(points), Some(site)),
                Err(reason) => (Err(reason), None),
            };
            let row = row.unwrap_or_else(|| any_row(name));
            PlannedProbe { name, program: row.program, function: row.function, points, site }
        })
        .collect();
    Plan { probes, warning }
}

fn applies(row: &RuntimeProbe, version: GoVersion) -> bool {
    row.since <= version && row.until.is_none_or(|until| version < until)
}

/// The table row for `name`: the one for the version, or for an unknown
/// version the one that decodes no arguments (never a wrong number).
fn choose_row(name: &str, version: Option<GoVersion>) -> Option<&'static RuntimeProbe> {
    let mut rows = RUNTIME_PROBES.iter().filter(|row| row.name == name);
    match version {
        Some(version) => rows.find(|row| applies(row, version)),
        None => rows.find(|row| !row.decodes_arguments),
    }
}

fn any_row(name: &str) -> &'static RuntimeProbe {
    RUNTIME_PROBES.iter().find(|row| row.name == name).expect("name comes from the table")
}

/// The row's points at its site, or at its fallback site when the site is
/// not in this binary; says which was used.
fn points(binary: &GoBinary, row: &RuntimeProbe) -> Result<(Vec<ProbePoint>, Site), String> {
    match (points_at(binary, row.function, row.site), row.fallback) {
        (Ok(points), _) => Ok((points, row.site)),
        (Err(_), Some(fallback)) => Ok((points_at(binary, row.function, fallback)?, fallback)),
        (Err(error), None) => Err(error),
    }
}

fn points_at(
    binary: &GoBinary,
    function_name: &str,
    site: Site,
) -> Result<Vec<ProbePoint>, String> {
    let function = binary
        .function(function_name)
        .ok_or_else(|| format!("{function_name} not found in the binary (renamed or inlined?)"))?;
    let callee = |name: &str| {
        binary.function(name).ok_or_else(|| format!("{name} not found in the binary (inlined?)"))
    };
    match site {
        Site::Entry => {
            let entry = binary.entry_probe_offset(&function).map_err(|e| e.to_string())?;
            if entry.condition != StackCheckCondition::BelowOrEqual {
                return Err(format!(
                    "{function_name}: stack check ends in `jb`, not `jbe`: the morestack re-entry \
                     cannot be told apart; not probed"
                ));
            }
            ensure_emulated(binary, &function, &[entry.point])?;
            Ok(vec![entry.point])
        }
        Site::DerivedFrom(_) => Ok(Vec::new()),
        Site::Returns => {
            let returns = binary.return_offsets(&function).map_err(|e| e.to_string())?;
            if returns.is_empty() {
                return Err(format!("{function_name}: no RET instruction found"));
            }
            Ok(returns)
        }
        Site::CallsTo(callee_name) => {
            let callee = callee(callee_name)?;
            let sites = binary.call_sites(&function, &callee).map_err(|e| e.to_string())?;
            if sites.is_empty() {
                return Err(format!("{function_name}: no call to {callee_name} (inlined?)"));
            }
            ensure_emulated(binary, &function, &sites)?;
            Ok(sites)
        }
        Site::BranchToCallBeforeReturn(callee_name) => {
            let callee = callee(callee_name)?;
            let branch = binary
                .branch_to_call_before_return(&function, &callee)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!("{function_name}: no final branch to {callee_name} before its RET")
                })?;
            ensure_emulated(binary, &function, &[branch])?;
            Ok(vec![branch])
        }
    }
}

/// Refuses a point the kernel would single-step (15-35x the cost of an
/// emulated one, paid inside the target): a last check on the decoder's choice.
fn ensure_emulated(
    binary: &GoBinary,
    function: &Function,
    points: &[ProbePoint],
) -> Result<(), String> {
    let code = binary.function_code(function).map_err(|e| e.to_string())?;
    for point in points {
        let offset = point.address.checked_sub(function.address).map(|o| o as usize);
        let instruction =
            offset.and_then(|o| code.get(o..)).and_then(|c| decode_one(c, point.address));
        match instruction {
            Some(instruction) if is_kernel_emulated(&instruction) => {}
            _ => {
                return Err(format!(
                    "{}: the instruction at {:#x} is not one the kernel emulates; a uprobe there \
                     would be single-stepped",
                    function.name, point.address
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        gobinary::{
            decode_one,
            go_toolchain::{GoToolchain, Variant},
            is_kernel_emulated, is_return,
        },
        goruntime::Site,
    };

    /// Every attach point the agent chooses, on every toolchain of the matrix
    /// (GOLENS_TEST_GO) and every build variant, is an instruction the kernel
    /// emulates (never the single-stepped prologue `cmp`, never a `RET`: no
    /// fallback is needed on any version), no probe is missing, and each
    /// sits where the table says.
    #[test]
    fn every_chosen_point_is_emulated_and_no_fallback_is_needed() {
        for toolchain in GoToolchain::from_env() {
            for variant in Variant::ALL {
                let path = toolchain.build(variant);
                let binary = GoBinary::open(&path).expect("test binary opens");
                let plan = plan(&binary, UprobeFamily::ALL);
                assert!(plan.warning.is_none(), "{}: {:?}", toolchain.version, plan.warning);
                for planned in &plan.probes {
                    let what = format!("{} {variant:?} {}", toolchain.version, planned.name);
                    let points = planned.points.as_ref().unwrap_or_else(|e| panic!("{what}: {e}"));
                    let row = RUNTIME_PROBES
                        .iter()
                        .find(|r| {
                            r.name == planned.name
                                && r.program == planned.program
                                && Some(r.site) == planned.site
                        })
                        .unwrap_or_else(|| panic!("{what}: fell back to {:?}", planned.site));
                    assert_ne!(row.site, Site::Returns, "{what}");
                    let function = binary.function(planned.function).expect("planned function");
                    let code = binary.function_code(&function).expect("function code");
                    for point in points {
                        assert_ne!(point.address, function.address, "{what}: first byte");
                        let at = (point.address - function.address) as usize;
                        let instruction = decode_one(&code[at..], point.address).expect("decodes");
                        assert!(
                            is_kernel_emulated(&instruction),
                            "{what}: {:?} at {:#x}",
                            instruction.code(),
                            point.address
                        );
                        assert!(!is_return(&instruction), "{what}");
                    }
                }
            }
        }
    }
}
