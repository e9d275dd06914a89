//! `golens list`: the Go processes found, and which runtime probes attach.

use std::io::Write;

use anyhow::{bail, Context, Result};

use crate::{
    attach::AttachMode,
    cli::ListArgs,
    discovery::{procfs, Inspection, Inspector},
    gobinary::GoBinary,
    goruntime::{
        plan::{plan, resolve_derived},
        UprobeFamily,
    },
    snapshot::{ProbeStatus, Snapshot},
};

/// One row of the listing, from local inspection or from an agent's snapshot.
struct Row {
    pid: u32,
    comm: String,
    go_version: String,
    stripped: bool,
    pie: bool,
    probes: Vec<ProbeStatus>,
    /// e.g. an unknown or untested Go version.
    warning: Option<String>,
}

pub fn list(args: &ListArgs) -> Result<()> {
    let (rows, verb, mode) = match &args.agent {
        Some(url) => {
            let (rows, mode) = rows_from_agent(url, &args.pids)?;
            let mode = mode
                .map_or("unknown (agent too old to say)".to_string(), |m| m.describe().to_string());
            (rows, "attached", mode)
        }
        None => (rows_from_host(&args.pids)?, "would attach", local_attach_mode()),
    };
    let mut out = std::io::stdout().lock();
    render(&mut out, &rows, verb, args.verbose)?;
    writeln!(out, "attach mode: {mode}")?;
    Ok(())
}

fn rows_from_host(pids: &[u32]) -> Result<Vec<Row>> {
    let pids =
        if pids.is_empty() { procfs::list_pids().context("listing /proc")? } else { pids.to_vec() };
    let mut inspector = Inspector::default();
    let mut rows = Vec::new();
    for pid in pids {
        if pid == std::process::id() {
            continue;
        }
        let Inspection::Go { comm, open_path, fresh, .. } = inspector.inspect(pid) else {
            continue;
        };
        let binary = match fresh {
            Some(binary) => binary,
            None => match GoBinary::open(&open_path) {
                Ok(binary) => std::sync::Arc::new(binary),
                Err(_) => continue, // gone or replaced since
            },
        };
        let plan = plan(&binary, UprobeFamily::DEFAULT);
        let mut outcomes: Vec<Result<usize, String>> = plan
            .probes
            .iter()
            .map(|planned| planned.points.as_ref().map(Vec::len).map_err(Clone::clone))
            .collect();
        resolve_derived(&plan.probes, &mut outcomes);
        let probes =
            plan.probes.iter().zip(outcomes).map(|(planned, o)| planned.status(o)).collect();
        rows.push(Row {
            pid,
            comm,
            go_version: binary.go_version.clone().unwrap_or_else(|| "unknown".into()),
            stripped: binary.stripped,
            pie: binary.pie,
            probes,
            warning: plan.warning,
        });
    }
    Ok(rows)
}

/// What a local agent would use, from the kernel version alone (the agent
/// itself asks the kernel when it starts).
fn local_attach_mode() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let mode = if kernel_has_uprobe_multi(release) {
        AttachMode::UprobeMulti
    } else {
        AttachMode::PerfEvent
    };
    format!("{} (kernel {release}, as an agent would attach)", mode.describe())
}

/// uprobe_multi links arrived in Linux 6.6.
fn kernel_has_uprobe_multi(release: &str) -> bool {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok());
    let (major, minor): (u32, u32) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (6, 6)
}

fn rows_from_agent(base_url: &str, pids: &[u32]) -> Result<(Vec<Row>, Option<AttachMode>)> {
    let target = format!("{}/api/v1/snapshot", base_url.trim_end_matches('/'));
    // A password in the URL (basic auth) is sent, never shown.
    let url = crate::tui::feed::redacted(&target);
    let base_url = crate::tui::feed::redacted(base_url);
    let mut response =
        ureq::get(&target).call().with_context(|| format!("asking the agent at {url}"))?;
    let body = response.body_mut().read_to_string().context("reading the agent's answer")?;
    let snapshot: Snapshot = serde_json::from_str(&body)
        .with_context(|| format!("{url} did not answer with a golens snapshot"))?;
    if snapshot.agent.collections == 0 {
        bail!("the agent at {base_url} has not collected anything yet (still starting?)");
    }
    let mode = snapshot.agent.attach_mode;
    let rows = snapshot
        .processes
        .into_iter()
        .filter(|p| pids.is_empty() || pids.contains(&p.pid))
        .map(|p| Row {
            pid: p.pid,
            comm: p.comm,
            go_version: p.go_version,
            stripped: p.stripped,
            pie: p.pie,
            probes: p.probes,
            warning: None,
        })
        .collect();
    Ok((rows, mode))
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

fn render(out: &mut impl Write, rows: &[Row], verb: &str, verbose: bool) -> std::io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "no Go process found");
    }
    writeln!(
        out,
        "{:>8}  {:<16} {:<12} {:<8} {:<4} PROBES ({verb})",
        "PID", "COMM", "GO", "STRIPPED", "PIE"
    )?;
    for row in rows {
        let attached = row.probes.iter().filter(|p| p.attached).count();
        writeln!(
            out,
            "{:>8}  {:<16} {:<12} {:<8} {:<4} {attached}/{}",
            row.pid,
            row.comm,
            row.go_version,
            yes_no(row.stripped),
            yes_no(row.pie),
            row.probes.len()
        )?;
        if let Some(warning) = &row.warning {
            writeln!(out, "{:>10}warning: {warning}", "")?;
        }
        for probe in &row.probes {
            match &probe.reason {
                Some(reason) => writeln!(out, "{:>10}{}: not attached: {reason}", "", probe.probe)?,
                None if verbose => writeln!(
                    out,
                    "{:>10}{}: {}, {} ({} point{})",
                    "",
                    probe.probe,
                    probe.function,
                    probe.site.as_deref().unwrap_or("?"),
                    probe.points,
                    if probe.points == 1 { "" } else { "s" }
                )?,
                None => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(probe: &str, reason: Option<&str>) -> ProbeStatus {
        ProbeStatus {
            probe: probe.into(),
            function: format!("runtime.{probe}"),
            attached: reason.is_none(),
            points: usize::from(reason.is_none()),
            reason: reason.map(Into::into),
            site: reason.is_none().then(|| "CALL runtime.wakep".into()),
            single_stepped: false,
        }
    }

    #[test]
    fn renders_one_row_per_process_and_each_failure_reason() {
        let rows = [Row {
            pid: 42,
            comm: "api".into(),
            go_version: "go1.21.13".into(),
            stripped: true,
            pie: false,
            probes: vec![status("gc_cycle_start", None), status("sysmon_preempt", Some("inlined"))],
            warning: None,
        }];
        let mut out = Vec::new();
        render(&mut out, &rows, "attached", false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("PROBES (attached)"), "{text}");
        assert!(
            lines[1].contains("42") && lines[1].contains("go1.21.13") && lines[1].contains("1/2")
        );
        assert!(lines[1].contains("yes") && lines[1].contains("no"));
        assert_eq!(lines[2].trim(), "sysmon_preempt: not attached: inlined");
        assert_eq!(lines.len(), 3, "attached probes are listed only with --verbose");
    }

    #[test]
    fn uprobe_multi_from_the_kernel_release() {
        assert!(kernel_has_uprobe_multi("6.18.44-fc-v669"));
        assert!(kernel_has_uprobe_multi("6.6.0"));
        assert!(!kernel_has_uprobe_multi("6.5.13-generic"));
        assert!(!kernel_has_uprobe_multi("5.15.0-91-generic"));
        assert!(!kernel_has_uprobe_multi("garbage"));
    }

    #[test]
    fn empty_listing_says_so() {
        let mut out = Vec::new();
        render(&mut out, &[], "attached", false).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "no Go process found\n");
    }
}
