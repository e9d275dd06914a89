//! dashboards/, proven to work: the generated files match their generator,
//! promtool checks the rules and runs their unit tests (every alert fires and
//! stays quiet on synthetic series), every dashboard is well formed and
//! type-checks against Grafana's own schema (@grafana/schema, with tsc), every
//! metric they name is in the README catalogue and every catalogue metric is on
//! a dashboard, and — privileged — every query of every panel, template
//! variable and rule runs against a real Prometheus scraping a real agent that
//! watches real Go workloads.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    thread::sleep,
    time::{Duration, Instant},
};

use common::{build_workload_with, free_port, start_workload, Agent, ChildGuard, GoBuild};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dashboards_dir() -> PathBuf {
    repo().join("dashboards")
}

/// Template variables every dashboard has, and every panel query filters by
/// (datasource: every panel's data source).
const VARIABLES: &[&str] =
    &["datasource", "job", "instance", "comm", "pid", "container_id", "pod_uid"];
/// Grafana's own interval variables; the queries run here with `1m` instead.
const INTERVALS: &[&str] = &["$__rate_interval", "$__interval", "$__range"];

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?} ({e}): run `cargo xtask setup`"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .expect("dashboards/")
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "expected the five dashboards in dashboards/, found {files:?}");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            Dashboard { file, json }
        })
        .collect()
}

/// Every panel, the panels inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"].as_array().into_iter().flatten().collect()
}

/// `label_values(SELECTOR, label)` → SELECTOR.
fn label_values_selector(query: &str) -> Option<&str> {
    let inner = query.strip_prefix("label_values(")?.strip_suffix(')')?;
    Some(inner.rsplit_once(',')?.0.trim())
}

/// A PromQL expression, where it comes from, and whether it must return series.
#[derive(Debug)]
struct Query {
    origin: String,
    expr: String,
    needs_data: bool,
}

/// Every panel target's expression and every query variable's selector.
fn dashboard_queries(dashboard: &Dashboard) -> Vec<Query> {
    let mut queries = Vec::new();
    for panel in panels(&dashboard.json) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push(Query {
                    origin: format!(
                        "{} panel {} \"{}\" target {}",
                        dashboard.file,
                        panel["id"],
                        panel["title"].as_str().unwrap_or(""),
                        target["refId"].as_str().unwrap_or("?")
                    ),
                    expr: expr.to_string(),
                    needs_data: true,
                });
            }
        }
    }
    for variable in variables(&dashboard.json) {
        if let Some(selector) = variable["query"].as_str().and_then(label_values_selector) {
            queries.push(Query {
                origin: format!(
                    "{} variable ${}",
                    dashboard.file,
                    variable["name"].as_str().unwrap()
                ),
                expr: selector.to_string(),
                needs_data: true,
            });
        }
    }
    queries
}

/// The `$name` / `${name}` template variables an expression uses, with the
/// text just before and after each.
fn variable_uses(expr: &str) -> Vec<(String, String, String)> {
    let mut uses = Vec::new();
    let mut rest = expr;
    let mut before = String::new();
    while let Some(at) = rest.find('$') {
        before.push_str(&rest[..at]);
        let after_dollar = &rest[at + 1..];
        let (name, after) = match after_dollar.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').unwrap_or(braced.len());
                (&braced[..end], &braced[(end + 1).min(braced.len())..])
            }
            None => {
                let end = after_dollar
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after_dollar.len());
                (&after_dollar[..end], &after_dollar[end..])
            }
        };
        uses.push((name.to_string(), before.clone(), after.to_string()));
        before.push('$');
        before.push_str(name);
        rest = after;
    }
    uses
}

/// The expression as Prometheus runs it here: Grafana's intervals as `1m`,
/// every template variable as "All" (`.*`, as the dashboards' allValue).
fn concrete(expr: &str) -> String {
    let mut out = expr.to_string();
    for interval in INTERVALS {
        out = out.replace(interval, "1m");
    }
    for (name, _, _) in variable_uses(&out.clone()) {
        out = out.replace(&format!("${{{name}}}"), ".*").replace(&format!("${name}"), ".*");
    }
    assert!(!out.contains('$'), "unreplaced variable in {out}");
    out
}

/// Identifiers of golens metrics in PromQL (recording rule names, which hold
/// a `:`, are not metrics of the agent).
fn golens_metrics(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("golens_") && !token.contains(':'))
        .map(str::to_string)
        .collect()
}

/// The README's metric catalogue: name → type (gauge, counter, histogram).
fn catalogue() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let section = readme.split("\n## Metrics\n").nth(1).expect("README has a ## Metrics section");
    let section = section.split("\n## ").next().unwrap();
    let mut metrics = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `golens_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let kind = cells[2].split_whitespace().next().unwrap_or("").to_string();
        for (i, token) in cells[1].split('`').enumerate() {
            if i % 2 == 1 {
                metrics.insert(token.split('{').next().unwrap().to_string(), kind.clone());
            }
        }
    }
    assert!(metrics.len() > 30, "too few metrics parsed from the README: {metrics:?}");
    metrics
}

/// The catalogue entry a PromQL identifier refers to (histograms through
/// their _bucket/_sum/_count series), if any.
fn catalogue_entry<'a>(catalogue: &'a BTreeMap<String, String>, name: &'a str) -> Option<&'a str> {
    if catalogue.get(name).is_some_and(|kind| kind != "histogram") {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (catalogue.get(base)? == "histogram").then_some(base)
    })
}

/// (rule name, expression) of every rule in rules.yml, as generate.py writes
/// them (`- record:`/`- alert:` then an `expr: |-` block).
fn rules_yml() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dashboards_dir().join("rules.yml")).unwrap();
    let mut rules = Vec::new();
    let mut lines = text.lines().peekable();
    let mut name = String::new();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(n) = trimmed.strip_prefix("- record: ").or(trimmed.strip_prefix("- alert: ")) {
            name = n.trim().to_string();
        } else if trimmed == "expr: |-" {
            let indent = line.len() - trimmed.len();
            let mut expr = Vec::new();
            while let Some(next) = lines.peek() {
                if next.len() - next.trim_start().len() <= indent {
                    break;
                }
                expr.push(next.trim());
                lines.next();
            }
            rules.push((name.clone(), expr.join(" ")));
        }
    }
    rules
}

// ---------------------------------------------------------------------------
// Without privileges

#[test]
fn generated_files_match_the_generator() {
    let output =
        run(Command::new("python3").arg(dashboards_dir().join("generate.py")).arg("--check"));
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn promtool_checks_the_rules() {
    let output = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(dashboards_dir().join("rules.yml")));
    assert!(output.status.success(), "promtool check rules: {}", text(&output));
    let rules = rules_yml();
    assert!(
        text(&output).contains(&format!("SUCCESS: {} rules found", rules.len())),
        "promtool and this test disagree on the rules: {}\n{rules:?}",
        text(&output)
    );
}

#[test]
fn promtool_unit_tests_fire_and_quiet_every_alert() {
    let file = dashboards_dir().join("rules_test.yml");
    let output = run(Command::new("promtool").arg("test").arg("rules").arg(&file));
    assert!(output.status.success(), "promtool test rules: {}", text(&output));

    // Each alert has a case where it fires and one where it must stay quiet.
    let tests = std::fs::read_to_string(&file).unwrap();
    let mut cases: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut lines = tests.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(alert) = line.strip_prefix("alertname: ") {
            let entry = cases.entry(alert.to_string()).or_default();
            match lines.next() {
                Some("exp_alerts: []") => entry.1 += 1,
                Some("exp_alerts:") => entry.0 += 1,
                other => panic!("unexpected line after alertname {alert}: {other:?}"),
            }
        }
    }
    let alerts: Vec<String> = std::fs::read_to_string(dashboards_dir().join("rules.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: ").map(str::to_string))
        .collect();
    assert!(alerts.len() >= 12, "too few alerts: {alerts:?}");
    for alert in &alerts {
        let (fires, quiet) = cases.get(alert).copied().unwrap_or_default();
        assert!(fires >= 1 && quiet >= 1, "{alert}: {fires} firing and {quiet} quiet cases");
    }
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = BTreeSet::new();
    for dashboard in dashboards() {
        let (file, json) = (&dashboard.file, &dashboard.json);
        let uid = json["uid"].as_str().unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(!uid.is_empty() && uid.len() <= 40, "{file}: uid {uid:?}");
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} used twice");
        assert!(
            json["title"].as_str().is_some_and(|t| t.starts_with("golens / ")),
            "{file}: title"
        );
        // 36 is the first with object datasource refs; 41 Grafana 11.6's.
        let schema = json["schemaVersion"].as_u64().unwrap_or(0);
        assert!((36..=41).contains(&schema), "{file}: schemaVersion {schema}");
        assert!(json["id"].is_null(), "{file}: an exported dashboard has id null");

        let defined: BTreeMap<&str, &Value> =
            variables(json).into_iter().map(|v| (v["name"].as_str().unwrap(), v)).collect();
        for name in VARIABLES {
            let variable =
                defined.get(name).unwrap_or_else(|| panic!("{file}: no ${name} variable"));
            if *name == "datasource" {
                assert_eq!(variable["type"], "datasource", "{file}: $datasource");
                assert_eq!(variable["query"], "prometheus", "{file}: $datasource");
            } else {
                assert_eq!(variable["type"], "query", "{file}: ${name}");
                assert_eq!(variable["datasource"]["uid"], "${datasource}", "{file}: ${name}");
                assert!(
                    variable["query"].as_str().and_then(label_values_selector).is_some(),
                    "{file}: ${name} is not a label_values() query"
                );
                if variable["includeAll"] == true {
                    assert_eq!(
                        variable["allValue"], ".*",
                        "{file}: ${name}'s All must match absent labels"
                    );
                }
            }
        }

        let mut ids = BTreeSet::new();
        let mut cells: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        let mut used = BTreeSet::new();
        for panel in panels(json) {
            let id = panel["id"].as_u64().unwrap_or_else(|| panel_fail(file, panel, "no id"));
            assert!(ids.insert(id), "{file}: panel id {id} used twice");
            let grid = &panel["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"]
                .map(|k| grid[k].as_u64().unwrap_or_else(|| panel_fail(file, panel, "gridPos")));
            assert!(w > 0 && h > 0 && x + w <= 24, "{file}: panel {id} gridPos {grid}");
            for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
                if let Some(other) = cells.insert(cell, id) {
                    panic!("{file}: panels {other} and {id} overlap at {cell:?}");
                }
            }
            if panel["type"] == "row" {
                continue;
            }
            assert!(
                panel["title"].as_str().is_some_and(|t| !t.is_empty()),
                "{file}: panel {id} title"
            );
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: panel {id} datasource"
            );
            let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
            let targets = targets.unwrap_or_else(|| panel_fail(file, panel, "no targets"));
            let mut ref_ids = BTreeSet::new();
            for target in targets {
                assert!(ref_ids.insert(target["refId"].to_string()), "{file}: panel {id}: refIds");
                assert_eq!(
                    target["datasource"]["uid"], "${datasource}",
                    "{file}: panel {id} target"
                );
                let expr =
                    target["expr"].as_str().unwrap_or_else(|| panel_fail(file, panel, "no expr"));
                for (name, before, after) in variable_uses(expr) {
                    if INTERVALS.contains(&format!("${name}").as_str()) {
                        continue;
                    }
                    assert!(
                        defined.contains_key(name.as_str()),
                        "{file}: panel {id} uses undefined ${name}"
                    );
                    // Multi-value and All only work inside a regex matcher.
                    assert!(
                        before.ends_with("=~\"") && after.starts_with('"'),
                        "{file}: panel {id} uses ${name} outside a `=~\"$var\"` matcher: {expr}"
                    );
                    used.insert(name);
                }
            }
        }
        for variable in defined.keys().filter(|name| **name != "datasource") {
            assert!(used.contains(*variable), "{file}: no panel uses ${variable}");
        }
    }
}

fn panel_fail(file: &str, panel: &Value, what: &str) -> ! {
    panic!("{file}: panel {} \"{}\": {what}", panel["id"], panel["title"])
}

#[test]
fn every_metric_named_is_in_the_readme_catalogue_and_every_one_is_on_a_dashboard() {
    let catalogue = catalogue();
    let mut on_dashboards = BTreeSet::new();
    for dashboard in dashboards() {
        for query in dashboard_queries(&dashboard) {
            for metric in golens_metrics(&query.expr) {
                let entry = catalogue_entry(&catalogue, &metric).unwrap_or_else(|| {
                    panic!("{}: {metric} is not in the README's metric catalogue", query.origin)
                });
                on_dashboards.insert(entry.to_string());
            }
        }
    }
    for (rule, expr) in rules_yml() {
        for metric in golens_metrics(&expr) {
            assert!(
                catalogue_entry(&catalogue, &metric).is_some(),
                "rules.yml {rule}: {metric} is not in the README's metric catalogue"
            );
        }
    }
    let missing: Vec<&String> = catalogue.keys().filter(|m| !on_dashboards.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "metrics of the README catalogue on no dashboard (add them in dashboards/generate.py): {missing:?}"
    );
}

// ---------------------------------------------------------------------------
// The dashboards against Grafana's own schema

/// Grafana's dashboard types as JSON has them: its TypeScript enums (string
/// and numeric) become the literal values they stand for.
const WIRE_TYPE: &str = "\
type Wire<T> = T extends string ? `${T}`
  : T extends number ? (`${T}` extends `${infer N extends number}` ? N : number)
  : T extends boolean | null | undefined ? T
  : T extends Array<infer U> ? Array<Wire<U>>
  : T extends object ? { [K in keyof T]: Wire<T[K]> }
  : T;
";

/// A TypeScript module that assigns each dashboard, as an object literal (so
/// excess properties and literal types are checked, which a JSON import would
/// widen away), to `Dashboard` from @grafana/schema.
fn typescript_check(dashboards: &[(String, String)]) -> String {
    let mut source =
        format!("import type {{ Dashboard }} from \"@grafana/schema\";\n\n{WIRE_TYPE}\n");
    for (i, (file, json)) in dashboards.iter().enumerate() {
        source.push_str(&format!(
            "// {file}\nexport const dashboard{i}: Wire<Dashboard> = {json};\n\n"
        ));
    }
    source
}

/// Runs tsc on `source` from a folder under target/npm (where `cargo xtask
/// setup` installs @grafana/schema and typescript).
fn tsc(name: &str, source: &str) -> Output {
    let npm = repo().join("target/npm");
    let tsc = npm.join("node_modules/typescript/bin/tsc");
    for needed in [&tsc, &npm.join("node_modules/@grafana/schema/package.json")] {
        assert!(needed.is_file(), "{} is missing: run `cargo xtask setup`", needed.display());
    }
    let dir = npm.join(format!("dashboards-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.ts"));
    std::fs::write(&file, source).unwrap();
    let output = run(Command::new("node")
        .arg(&tsc)
        .args([
            "--noEmit",
            "--strict",
            "--skipLibCheck",
            "--target",
            "es2022",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
        ])
        .arg(&file));
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir(&dir);
    output
}

#[test]
fn dashboards_type_check_against_grafana_schema() {
    let files: Vec<(String, String)> = dashboards()
        .into_iter()
        .map(|d| {
            let json = serde_json::to_string_pretty(&d.json).unwrap();
            (d.file, json)
        })
        .collect();
    let output = tsc("dashboards", &typescript_check(&files));
    assert!(output.status.success(), "dashboards do not match @grafana/schema:\n{}", text(&output));

    // The check is live: a wrong enum value, a wrong type and an unknown
    // field in one dashboard are each caught.
    let mut broken = dashboards().remove(0);
    broken.json["graphTooltip"] = 7.into();
    let panel = broken.json["panels"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["type"] != "row")
        .unwrap();
    panel["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut".into();
    panel["gridPos"]["w"] = "wide".into();
    broken.json["templating"]["list"][1]["refreshes"] = 1.into();
    let json = serde_json::to_string_pretty(&broken.json).unwrap();
    let output = tsc("broken", &typescript_check(&[(broken.file, json)]));
    let said = text(&output);
    assert!(!output.status.success(), "tsc accepted a broken dashboard:\n{said}");
    for expected in
        ["'7'", "'\"absolut\"'", "'string' is not assignable to type 'number'", "'\"refreshes\"'"]
    {
        assert!(said.contains(expected), "tsc did not report {expected}:\n{said}");
    }
}

// ---------------------------------------------------------------------------
// Every query against a real Prometheus (privileged)

/// The newest Go of the matrix: stop-the-world reasons are decoded.
const GO: &str = "1.27.3";
/// The workloads' comms (unique to this test, so other agents leave them be).
const GCBURN: &str = "gld-gcburn";
const DEMO: &str = "gld-demo";
const IDLE: &str = "gld-idle";

/// Metrics this test may not be able to make exist, and why. A query that
/// returns no series passes only when it names one of these and that metric
/// is absent from Prometheus at that moment.
const MAY_BE_ABSENT: &[(&str, &str)] = &[
    ("golens_host_conntrack_entries", "absent where nf_conntrack is not loaded"),
    ("golens_host_conntrack_max", "absent where nf_conntrack is not loaded"),
    (
        "golens_cgroup_cpu_quota_cores",
        "absent without a CPU quota: the test makes one only where the host lets it create a \
         cgroup with the cpu controller (then the metric is required)",
    ),
    (
        "golens_agent_discovery_errors_total",
        "a series appears only once some executable could not be read, which root rarely meets",
    ),
];

/// A workload binary copied under the comm this test filters on.
fn workload(name: &str, comm: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboards");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(comm);
    let _ = std::fs::remove_file(&path);
    std::fs::copy(build_workload_with(name, GO, GoBuild::default()), &path).unwrap();
    path
}

/// Debian's Prometheus on loopback, scraping `target` every second and
/// evaluating dashboards/rules.yml every second; killed and its data removed on drop.
struct Prometheus {
    url: String,
    dir: PathBuf,
    _child: ChildGuard,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("golens-dashboards-{}", std::process::id()));
        let rules = dashboards_dir().join("rules.yml").canonicalize().unwrap();
        let (child, url) = common::start_prometheus(
            &dir,
            &format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: ['{}']\n\
                 scrape_configs:\n  - job_name: golens\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        );
        Prometheus { url, dir, _child: child }
    }

    /// GET an API path: the `data` of a success, or the error Prometheus gave.
    fn api(&self, path: &str, query: Option<&str>) -> Result<Value, String> {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut request = agent.get(&format!("{}{path}", self.url));
        if let Some(promql) = query {
            request = request.query("query", promql);
        }
        let mut response = request.call().map_err(|e| format!("request failed: {e}"))?;
        let body = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
        let json: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{}: {}", json["errorType"], json["error"]));
        }
        Ok(json["data"].clone())
    }

    /// An instant query's series.
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", Some(promql))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    fn value(&self, promql: &str) -> Option<f64> {
        self.query(promql).ok()?.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Every rule Prometheus loaded: (group, rule JSON).
    fn rules(&self) -> Vec<Value> {
        let data = self.api("/api/v1/rules", None).unwrap_or_default();
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls until `ready` says true; panics with `what` after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    loop {
        match ready() {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => {
                panic!("waited {timeout:?} for {what}; last: {last}")
            }
            Err(_) => sleep(Duration::from_millis(250)),
        }
    }
}

#[test]
#[ignore = "privileged: loads eBPF programs and creates a cgroup; run `cargo xtask test` as root"]
fn every_dashboard_and_rule_query_runs_against_a_real_prometheus() {
    // gcburn: GC cycles and pauses for the whole test, GOMAXPROCS 4 in a
    // 1-CPU cgroup (quota, throttling, GOMAXPROCS above quota) where the host
    // allows one. demo: an HTTP service loading itself (netpoll, sockets).
    let cgroup = common::CpuLimitedCgroup::create("dashboards");
    if let Err(reason) = &cgroup {
        eprintln!("no CPU-limited cgroup ({reason}): quota panels may be empty");
    }
    let enter_cgroup = match &cgroup {
        Ok(cgroup) => format!("echo $$ > '{}' && ", cgroup.dir.join("cgroup.procs").display()),
        Err(_) => String::new(),
    };
    let script = format!("{enter_cgroup}export GOMAXPROCS=4 && exec \"$0\" \"$@\"");
    let gcburn = workload("gcburn", GCBURN);
    let gcburn = gcburn.to_str().unwrap();
    let _gcburn = start_workload(
        Path::new("/bin/sh"),
        &["-c", &script, gcburn, "-wait=false", "-duration", "120s", "-spin", "0s"],
    );
    let demo_listen = format!("127.0.0.1:{}", free_port());
    let _demo =
        start_workload(&workload("demo", DEMO), &["-listen", &demo_listen, "-selfload", "2"]);

    // At most two processes: a third one (idle) is skipped, so the skipped
    // processes panel has a series. Every probe family, the opt-in
    // gonetpoll too, so that its panel has series.
    let agent = Agent::start(&[
        "--comm",
        GCBURN,
        "--comm",
        DEMO,
        "--comm",
        IDLE,
        "--max-processes",
        "2",
        "--probes",
        "sched,goruntime,vma,fd,net,netpoll,timers,gonetpoll",
    ]);
    let tracked = agent.wait_for(Duration::from_secs(10), |m| {
        m.value("golens_agent_tracked_processes", &[]) == Some(2.0)
    });
    assert_eq!(
        tracked.value("golens_agent_tracked_processes", &[]),
        Some(2.0),
        "gcburn and demo watched"
    );
    let _idle = start_workload(&workload("idle", IDLE), &[]);
    let skipped = agent.wait_for(Duration::from_secs(10), |m| {
        m.value("golens_agent_skipped_processes_total", &[("reason", "max_processes")]).is_some()
    });
    assert!(
        skipped
            .value("golens_agent_skipped_processes_total", &[("reason", "max_processes")])
            .is_some(),
        "idle was not skipped at --max-processes 2"
    );

    let prometheus = Prometheus::start(agent.base_url.trim_start_matches("http://"));
    // Enough scrapes for every rate over 1m, and every rule evaluated once.
    let samples = [
        format!("count_over_time(golens_go_gc_cycles_total{{comm=\"{GCBURN}\"}}[1m])"),
        format!("count_over_time(golens_go_netpoll_wait_seconds_count{{comm=\"{DEMO}\"}}[1m])"),
        "count_over_time(golens_agent_skipped_processes_total[1m])".to_string(),
    ];
    wait_until(Duration::from_secs(60), "5 scrapes of the workloads", || {
        let counts: Vec<Option<f64>> = samples.iter().map(|q| prometheus.value(q)).collect();
        match counts.iter().all(|c| c.is_some_and(|c| c >= 5.0)) {
            true => Ok(()),
            false => Err(format!("{samples:?}: {counts:?}")),
        }
    });
    let rule_count = rules_yml().len();
    wait_until(Duration::from_secs(20), "every rule evaluated", || {
        let rules = prometheus.rules();
        let unevaluated: Vec<&Value> = rules.iter().filter(|r| r["health"] == "unknown").collect();
        match rules.len() == rule_count && unevaluated.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "{} of {rule_count} rules loaded, unevaluated: {unevaluated:?}",
                rules.len()
            )),
        }
    });
    if cgroup.is_ok() {
        let quota = format!("golens_cgroup_cpu_quota_cores{{comm=\"{GCBURN}\"}}");
        assert_eq!(prometheus.value(&quota), Some(1.0), "gcburn's 1-CPU quota");
    }

    // Every query: dashboards' panels and variables, and every rule as
    // Prometheus itself parsed it from rules.yml.
    let mut queries: Vec<Query> = dashboards().iter().flat_map(dashboard_queries).collect();
    let rules = prometheus.rules();
    for rule in &rules {
        let unhealthy = rule["health"] != "ok";
        assert!(!unhealthy, "rule {} is {}: {}", rule["name"], rule["health"], rule["lastError"]);
        queries.push(Query {
            origin: format!("rules.yml {} {}", rule["type"].as_str().unwrap_or(""), rule["name"]),
            expr: rule["query"].as_str().expect("rule query").to_string(),
            // An alert's expression is empty while all is well.
            needs_data: rule["type"] == "recording",
        });
    }
    let mut failures = Vec::new();
    let mut allowed = Vec::new();
    let mut with_data = 0;
    for query in &queries {
        let promql = concrete(&query.expr);
        match prometheus.query(&promql) {
            Err(error) => failures.push(format!("{}: {error}\n    {promql}", query.origin)),
            Ok(series) if !series.is_empty() => with_data += 1,
            Ok(_) if !query.needs_data => {}
            Ok(_) => {
                let named = golens_metrics(&promql);
                let absent: Vec<&(&str, &str)> = MAY_BE_ABSENT
                    .iter()
                    .filter(|(metric, _)| named.contains(*metric))
                    .filter(|(metric, _)| prometheus.query(metric).is_ok_and(|s| s.is_empty()))
                    .collect();
                match absent.first() {
                    Some((metric, why)) => {
                        allowed.push(format!("{}: {metric} {why}", query.origin))
                    }
                    None => failures.push(format!("{}: no series\n    {promql}", query.origin)),
                }
            }
        }
    }
    println!(
        "{} queries, {with_data} with series, {} empty as allowed:",
        queries.len(),
        allowed.len()
    );
    for line in &allowed {
        println!("  {line}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries failed:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );

    // The rules work on real series: GOMAXPROCS 4 in a 1-CPU cgroup makes
    // GolensGomaxprocsAboveCpuQuota pending (it fires after 15 minutes).
    if cgroup.is_ok() {
        let pending = format!(
            "ALERTS{{alertname=\"GolensGomaxprocsAboveCpuQuota\", alertstate=\"pending\", comm=\"{GCBURN}\"}}"
        );
        wait_until(
            Duration::from_secs(10),
            "GolensGomaxprocsAboveCpuQuota pending for gcburn",
            || match prometheus.query(&pending) {
                Ok(series) if !series.is_empty() => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn variables_are_found_with_their_context_and_made_concrete() {
        let expr = "rate(m{pid=~\"$pid\", comm=~\"${comm}\"}[$__rate_interval])";
        let uses = variable_uses(expr);
        let names: Vec<&str> = uses.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["pid", "comm", "__rate_interval"]);
        assert!(uses[0].1.ends_with("pid=~\"") && uses[0].2.starts_with('"'));
        assert_eq!(concrete(expr), "rate(m{pid=~\".*\", comm=~\".*\"}[1m])");
        assert_eq!(
            label_values_selector("label_values(m{a=~\"$a\", b=\"c\"}, pid)"),
            Some("m{a=~\"$a\", b=\"c\"}")
        );
    }

    #[test]
    fn histogram_series_resolve_to_their_catalogue_entry() {
        let catalogue: BTreeMap<String, String> = [
            ("golens_go_stw_pause_seconds", "histogram"),
            ("golens_go_gc_cycles_total", "counter"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        assert_eq!(
            catalogue_entry(&catalogue, "golens_go_stw_pause_seconds_bucket"),
            Some("golens_go_stw_pause_seconds")
        );
        assert_eq!(catalogue_entry(&catalogue, "golens_go_stw_pause_seconds"), None);
        assert_eq!(catalogue_entry(&catalogue, "golens_go_gc_cycles"), None);
        assert_eq!(
            catalogue_entry(&catalogue, "golens_go_gc_cycles_total"),
            Some("golens_go_gc_cycles_total")
        );
        assert_eq!(
            golens_metrics("process:golens_x:rate5m / on (job) golens_a_total"),
            BTreeSet::from(["golens_a_total".to_string()])
        );
    }
}
