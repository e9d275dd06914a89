//! The doctor's two outputs: text for a terminal, JSON for scripts (a stable
//! schema with a `version` field, bumped on any incompatible change).

use std::io::{self, Write};

use serde::Serialize;

use super::{
    check::{Check, Summary},
    facts::Facts,
};

/// JSON schema version.
pub const JSON_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub version: u32,
    /// The root directory the facts were read under ("/" on a real host).
    pub root: String,
    /// Kernel release, when readable.
    pub kernel: Option<String>,
    pub go_processes: Vec<GoProcessRow>,
    /// Processes whose executable could not be read (whether they are Go is unknown).
    pub uninspected_processes: Vec<UninspectedRow>,
    #[serde(skip)]
    uninspected_summary: Option<String>,
    pub checks: &'a [Check],
    pub summary: Summary,
    /// The process exit status: 0 all pass, 1 warn or unknown, 2 fail.
    pub exit_code: u8,
}

#[derive(Debug, Serialize)]
pub struct GoProcessRow {
    pub pid: u32,
    pub comm: String,
    pub go_version: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UninspectedRow {
    pub pid: u32,
    pub comm: String,
    pub reason: String,
}

impl<'a> Report<'a> {
    pub fn new(root: &str, facts: &Facts, checks: &'a [Check]) -> Report<'a> {
        let summary = Summary::of(checks);
        Report {
            version: JSON_VERSION,
            root: root.to_string(),
            kernel: facts.kernel_release.as_ref().ok().cloned(),
            go_processes: facts
                .processes
                .go
                .iter()
                .map(|p| GoProcessRow {
                    pid: p.pid,
                    comm: p.comm.clone(),
                    go_version: p.go_version.clone(),
                })
                .collect(),
            uninspected_processes: facts
                .processes
                .uninspected
                .iter()
                .map(|p| UninspectedRow {
                    pid: p.pid,
                    comm: p.comm.clone(),
                    reason: p.reason.clone(),
                })
                .collect(),
            uninspected_summary: facts.processes.uninspected_summary(),
            checks,
            summary,
            exit_code: summary.exit_code(),
        }
    }
}

pub fn json(out: &mut dyn Write, report: &Report<'_>) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}

/// Text lines are wrapped to this width.
const WIDTH: usize = 100;
/// Where a check's value, and its why/fix lines, start.
const INDENT: usize = 10;
const ID_WIDTH: usize = 22;

pub fn text(out: &mut dyn Write, report: &Report<'_>) -> io::Result<()> {
    let uninspected = report.uninspected_summary.as_deref();
    let kernel = report.kernel.as_deref().unwrap_or("unknown kernel");
    let go = match report.go_processes.len() {
        0 => "no Go process found".to_string(),
        n => {
            let list: Vec<String> = report
                .go_processes
                .iter()
                .map(|p| {
                    let version = p.go_version.as_deref().unwrap_or("unknown Go version");
                    format!("{} ({}, {version})", p.pid, p.comm)
                })
                .collect();
            format!("{n} Go process{}: {}", if n == 1 { "" } else { "es" }, list.join(", "))
        }
    };
    let header = format!("golens doctor: kernel {kernel}; {go}");
    write_wrapped(out, &header, "", "  ")?;
    if let Some(line) = uninspected {
        write_wrapped(out, &format!("note: {line}"), "", "  ")?;
    }
    writeln!(out)?;
    for check in report.checks {
        let tag = format!("[{}]", check.status.name().to_uppercase());
        let first = format!("{tag:<INDENT$}{:<ID_WIDTH$}", check.id);
        let rest = " ".repeat(INDENT + ID_WIDTH);
        write_wrapped(out, &check.value, &first, &rest)?;
        let indent = " ".repeat(INDENT);
        for detail in check.details.iter().filter(|d| !check.value.contains(d.as_str())) {
            write_wrapped(out, detail, &format!("{indent}- "), &format!("{indent}  "))?;
        }
        write_wrapped(out, &check.why, &format!("{indent}why: "), &format!("{indent}     "))?;
        if let Some(fix) = &check.fix {
            write_wrapped(out, fix, &format!("{indent}fix: "), &format!("{indent}     "))?;
        }
    }
    let s = &report.summary;
    writeln!(
        out,
        "\nsummary: {} pass, {} warn, {} fail, {} unknown; exit status {}",
        s.pass, s.warn, s.fail, s.unknown, report.exit_code
    )
}

/// Writes `text` word-wrapped to `WIDTH`: the first line after `first`, the
/// others after `rest`. A word longer than a line (a path) stays whole.
fn write_wrapped(out: &mut dyn Write, text: &str, first: &str, rest: &str) -> io::Result<()> {
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            writeln!(out, "{line}")?;
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    writeln!(out, "{}", line.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{
        check::{Status, CHECK_IDS},
        rules::evaluate,
    };

    /// (status, id) of each check line of a text report.
    fn tags(text: &str) -> Vec<(Status, String)> {
        text.lines()
            .filter_map(|line| {
                let (tag, rest) = line.split_once(']')?;
                let status = match tag {
                    "[PASS" => Status::Pass,
                    "[WARN" => Status::Warn,
                    "[FAIL" => Status::Fail,
                    "[UNKNOWN" => Status::Unknown,
                    _ => return None,
                };
                Some((status, rest.split_whitespace().next()?.to_string()))
            })
            .collect()
    }

    fn render(facts: &Facts, as_json: bool) -> String {
        let checks = evaluate(facts);
        let report = Report::new("/", facts, &checks);
        let mut out = Vec::new();
        if as_json {
            json(&mut out, &report).unwrap();
        } else {
            text(&mut out, &report).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    fn facts() -> Facts {
        let mut facts = crate::doctor::rules::fixtures::healthy();
        facts.overcommit_memory = Ok(2);
        facts.conntrack = Ok(Some(crate::doctor::facts::Conntrack { count: 99, max: 100 }));
        facts.processes.uninspected = vec![crate::doctor::rules::fixtures::uninspected(7)];
        facts
    }

    #[test]
    fn text_has_one_tagged_line_per_check_and_a_summary() {
        let output = render(&facts(), false);
        let tags = tags(&output);
        assert_eq!(tags.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(), CHECK_IDS);
        assert!(tags.contains(&(Status::Warn, "vm_overcommit_memory".into())), "{output}");
        assert!(tags.contains(&(Status::Fail, "conntrack".into())), "{output}");
        assert!(
            output.starts_with("golens doctor: kernel 6.1.0; 1 Go process: 42 (api, go1.21.13)")
        );
        assert!(output.contains("note: 1 process not inspected (pid 7 secret)"), "{output}");
        assert!(output.contains("          fix: sysctl -w vm.overcommit_memory=0"), "{output}");
        assert!(output.trim_end().ends_with("exit status 2"), "{output}");
        for line in output.lines() {
            let long_word = line.split_whitespace().any(|w| w.len() > 40);
            assert!(line.chars().count() <= WIDTH || long_word, "too long: {line}");
        }
    }

    #[test]
    fn json_schema() {
        let output = render(&facts(), true);
        let json: serde_json::Value = serde_json::from_str(&output).unwrap();
        assert_eq!(json["version"], JSON_VERSION);
        assert_eq!(json["kernel"], "6.1.0");
        assert_eq!(json["exit_code"], 2);
        assert_eq!(json["summary"]["fail"], 1);
        assert_eq!(json["go_processes"][0]["pid"], 42);
        assert_eq!(json["go_processes"][0]["go_version"], "go1.21.13");
        assert_eq!(json["uninspected_processes"][0]["pid"], 7);
        let checks = json["checks"].as_array().unwrap();
        assert_eq!(checks.len(), CHECK_IDS.len());
        let conntrack = checks.iter().find(|c| c["id"] == "conntrack").unwrap();
        assert_eq!(conntrack["status"], "fail");
        assert!(conntrack["fix"].as_str().unwrap().contains("nf_conntrack_max"));
        let swappiness = checks.iter().find(|c| c["id"] == "vm_swappiness").unwrap();
        assert_eq!(swappiness["status"], "pass");
        assert!(swappiness["fix"].is_null());
        for check in checks {
            for field in ["id", "status", "value", "why", "fix", "details"] {
                assert!(check.get(field).is_some(), "{field} missing in {check}");
            }
        }
    }

    #[test]
    fn wrapping_keeps_words_and_prefixes() {
        let mut out = Vec::new();
        let text = "word ".repeat(60);
        write_wrapped(&mut out, &text, "first: ", "       ").unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() > 2);
        assert!(lines[0].starts_with("first: word"));
        assert!(lines[1].starts_with("       word"));
        assert!(lines.iter().all(|l| l.len() <= WIDTH));
        let mut out = Vec::new();
        write_wrapped(&mut out, "", "[PASS]", "").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "[PASS]\n");
    }
}
