//! `golens top`'s state: the snapshots received, the window math over them
//! (rates and quantiles from the differences between successive snapshots),
//! sorting, filtering and formatting. No terminal here: `ui` draws an `App`.
//!
//! Every number comes from the agent's Snapshots; this file only takes
//! differences between two of them. A value a process cannot supply is a
//! `Reading::Missing` and shows "–", never 0.

use std::collections::{BTreeMap, VecDeque};

use crate::{
    snapshot::{Log2Histogram, ProcessSnapshot, Snapshot},
    verdict::{Shares, TimeSpent},
};

/// Shown for a value a process cannot supply.
pub const MISSING: &str = "–";
/// Shown for a quantile of a window with no event in it (measured: none).
pub const NO_EVENTS: &str = "none";

/// Per-interval points kept for the sparklines.
const SPARKLINE_POINTS: usize = 240;

/// The runtime probes a value needs, as `metrics.rs` gates the same series:
/// a number is shown only when every probe it needs is attached.
const GC_CYCLE_PROBES: &[&str] = &["gc_cycle_start"];
/// gc_cycle_end ends the mark-termination pauses where the runtime does.
const STW_PAUSE_PROBES: &[&str] = &["stw_stop", "stw_started", "gc_cycle_end"];
const STW_TIME_TO_STOP_PROBES: &[&str] = &["stw_stop", "stw_stopped"];

/// One value of the table: measured, measured but nothing happened (a
/// quantile of no event), or not available for this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    Value(f64),
    NoEvents,
    Missing,
}

impl Reading {
    fn from_quantile(
        available: bool,
        slots: Option<&[u64]>,
        quantile: impl Fn(&[u64]) -> Option<f64>,
    ) -> Reading {
        match slots {
            Some(slots) if available => quantile(slots).map_or(Reading::NoEvents, Reading::Value),
            _ => Reading::Missing,
        }
    }

    fn from_option(value: Option<f64>) -> Reading {
        value.map_or(Reading::Missing, Reading::Value)
    }

    pub fn value(self) -> Option<f64> {
        match self {
            Reading::Value(value) => Some(value),
            _ => None,
        }
    }

    /// Sorting class: values first, then "none", then "–" (in either direction).
    fn class(self) -> u8 {
        match self {
            Reading::Value(_) => 0,
            Reading::NoEvents => 1,
            Reading::Missing => 2,
        }
    }
}

/// Upper bound (seconds) of the log2 slot holding the `quantile` of the
/// values counted in `slots`; None when nothing was counted. The true value
/// lies in that slot: it is at most this bound and more than half of it.
pub fn quantile_upper_bound(slots: &[u64], quantile: f64) -> Option<f64> {
    let total: u64 = slots.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (slot, &count) in slots.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(Log2Histogram::slot_upper_bound_seconds(slot));
        }
    }
    None
}

/// Upper bound (seconds) of the highest slot that counted anything.
pub fn max_upper_bound(slots: &[u64]) -> Option<f64> {
    slots.iter().rposition(|&count| count > 0).map(Log2Histogram::slot_upper_bound_seconds)
}

/// `newer - older` slot by slot; None when a slot went backwards (the
/// counters were reset: a restarted agent, or a reused pid).
pub fn slot_delta(newer: &[u64], older: &[u64]) -> Option<Vec<u64>> {
    let len = newer.len().max(older.len());
    (0..len)
        .map(|i| {
            let (new, old) =
                (newer.get(i).copied().unwrap_or(0), older.get(i).copied().unwrap_or(0));
            new.checked_sub(old)
        })
        .collect()
}

/// The slots of every reason of a by-reason histogram, added up.
fn merged_slots(by_reason: &BTreeMap<String, Log2Histogram>) -> Vec<u64> {
    let mut slots = Vec::new();
    for histogram in by_reason.values() {
        if slots.len() < histogram.slots.len() {
            slots.resize(histogram.slots.len(), 0);
        }
        for (sum, count) in slots.iter_mut().zip(&histogram.slots) {
            *sum += count;
        }
    }
    slots
}

/// What one snapshot says about one process, kept to take differences.
#[derive(Debug, Clone)]
struct Sample {
    timestamp: f64,
    gc_cycles: u64,
    stw_pause: Vec<u64>,
    stw_time_to_stop: Vec<u64>,
    runqueue: Option<Vec<u64>>,
    involuntary_switches: Option<u64>,
    cpu_throttled_seconds: Option<f64>,
    /// For the verdict: every pause added up, the run-queue time, the CPU time.
    stw_pause_ns: u64,
    runqueue_ns: Option<u64>,
    cpu_seconds: Option<f64>,
}

impl Sample {
    fn of(process: &ProcessSnapshot, timestamp: f64) -> Sample {
        Sample {
            timestamp,
            gc_cycles: process.go.gc_cycles,
            stw_pause: merged_slots(&process.go.stw_pause),
            stw_time_to_stop: merged_slots(&process.go.stw_time_to_stop),
            runqueue: process.sched.as_ref().map(|s| s.runqueue_latency.slots.clone()),
            involuntary_switches: process.sched.as_ref().map(|s| s.involuntary_switches),
            cpu_throttled_seconds: process.limits.cpu_throttled_seconds,
            stw_pause_ns: process.go.stw_pause.values().map(|h| h.sum_ns).sum(),
            runqueue_ns: process.sched.as_ref().map(|s| s.runqueue_latency.sum_ns),
            cpu_seconds: process.limits.cpu_seconds,
        }
    }

    /// Whether a counter went backwards since `older`: then the two cannot
    /// be subtracted.
    fn reset_since(&self, older: &Sample) -> bool {
        let backwards =
            |new: Option<u64>, old: Option<u64>| matches!((new, old), (Some(n), Some(o)) if n < o);
        self.gc_cycles < older.gc_cycles
            || slot_delta(&self.stw_pause, &older.stw_pause).is_none()
            || slot_delta(&self.stw_time_to_stop, &older.stw_time_to_stop).is_none()
            || matches!((&self.runqueue, &older.runqueue), (Some(n), Some(o)) if slot_delta(n, o).is_none())
            || backwards(self.involuntary_switches, older.involuntary_switches)
            || matches!((self.cpu_throttled_seconds, older.cpu_throttled_seconds), (Some(n), Some(o)) if n < o)
    }
}

/// The p99s of one interval (between two successive snapshots), for the
/// sparklines; None: no event in that interval (or not measured).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalPoint {
    /// The snapshot that ends the interval (seconds since the epoch).
    pub timestamp: f64,
    pub stw_p99: Option<f64>,
    /// Upper bound of the interval's longest pause.
    pub stw_max: Option<f64>,
    pub runqueue_p99: Option<f64>,
}

/// One process across the snapshots of the window.
#[derive(Debug, Clone)]
struct ProcessHistory {
    latest: ProcessSnapshot,
    /// Oldest first; the first is the window's baseline.
    samples: VecDeque<Sample>,
    points: VecDeque<IntervalPoint>,
}

impl ProcessHistory {
    fn new(process: &ProcessSnapshot, timestamp: f64) -> ProcessHistory {
        ProcessHistory {
            latest: process.clone(),
            samples: VecDeque::from([Sample::of(process, timestamp)]),
            points: VecDeque::new(),
        }
    }

    fn push(&mut self, process: &ProcessSnapshot, timestamp: f64, window: f64) {
        let same_process = process.exe == self.latest.exe && process.comm == self.latest.comm;
        let sample = Sample::of(process, timestamp);
        let last = self.samples.back();
        if !same_process || last.is_some_and(|last| sample.reset_since(last)) {
            *self = ProcessHistory::new(process, timestamp);
            return;
        }
        if last.is_some_and(|last| timestamp <= last.timestamp) {
            self.latest = process.clone();
            return; // the same collection again (a reconnect): nothing new
        }
        if let Some(last) = last {
            let interval_p99 = |new: &[u64], old: &[u64]| {
                slot_delta(new, old).and_then(|d| quantile_upper_bound(&d, 0.99))
            };
            let point = IntervalPoint {
                timestamp,
                stw_p99: interval_p99(&sample.stw_pause, &last.stw_pause),
                stw_max: slot_delta(&sample.stw_pause, &last.stw_pause)
                    .and_then(|d| max_upper_bound(&d)),
                runqueue_p99: match (&sample.runqueue, &last.runqueue) {
                    (Some(new), Some(old)) => interval_p99(new, old),
                    _ => None,
                },
            };
            if self.points.len() == SPARKLINE_POINTS {
                self.points.pop_front();
            }
            self.points.push_back(point);
        }
        self.latest = process.clone();
        self.samples.push_back(sample);
        // Keep as baseline the newest sample at or before the window's start.
        while self.samples.len() > 2 && self.samples[1].timestamp <= timestamp - window {
            self.samples.pop_front();
        }
    }

    /// The window: its baseline and latest sample, when there are two.
    fn span(&self) -> Option<(&Sample, &Sample, f64)> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let seconds = last.timestamp - first.timestamp;
        (self.samples.len() >= 2 && seconds > 0.0).then_some((first, last, seconds))
    }

    fn row(&self, host_max_map_count: Option<u64>) -> Row {
        let process = &self.latest;
        let span = self.span();
        let rate = |value: fn(&Sample) -> Option<f64>| -> Reading {
            let rate = span
                .and_then(|(first, last, seconds)| Some((value(last)? - value(first)?) / seconds));
            Reading::from_option(rate)
        };
        let window_slots = |slots: fn(&Sample) -> Option<&Vec<u64>>| -> Option<Vec<u64>> {
            let (first, last, _) = span?;
            slot_delta(slots(last)?, slots(first)?)
        };
        let stw_pause = window_slots(|s| Some(&s.stw_pause));
        let time_to_stop = window_slots(|s| Some(&s.stw_time_to_stop));
        let runqueue = window_slots(|s| s.runqueue.as_ref());
        let stw_available = process.probes_attached(STW_PAUSE_PROBES);
        let p99 = |slots: &[u64]| quantile_upper_bound(slots, 0.99);
        let gc_available = process.probes_attached(GC_CYCLE_PROBES);
        let ratio = |used: Option<u64>, limit: Option<u64>| match (used, limit) {
            (Some(used), Some(limit)) if limit > 0 => Reading::Value(used as f64 / limit as f64),
            _ => Reading::Missing,
        };
        let vmas = process.limits.vmas.or(process.syscalls.vmas_peak);
        Row {
            pid: process.pid,
            comm: process.comm.clone(),
            go_version: process.go_version.clone(),
            gc_per_second: if gc_available {
                rate(|s| Some(s.gc_cycles as f64))
            } else {
                Reading::Missing
            },
            stw_p99: Reading::from_quantile(stw_available, stw_pause.as_deref(), p99),
            stw_max: Reading::from_quantile(stw_available, stw_pause.as_deref(), max_upper_bound),
            time_to_stop_p99: Reading::from_quantile(
                process.probes_attached(STW_TIME_TO_STOP_PROBES),
                time_to_stop.as_deref(),
                p99,
            ),
            runqueue_p99: Reading::from_quantile(process.sched.is_some(), runqueue.as_deref(), p99),
            involuntary_per_second: rate(|s| s.involuntary_switches.map(|n| n as f64)),
            vma_ratio: ratio(vmas, host_max_map_count),
            fd_ratio: ratio(process.limits.open_fds, process.limits.max_fds),
            throttled_per_second: rate(|s| s.cpu_throttled_seconds),
        }
    }
}

/// One line of the process table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub pid: u32,
    pub comm: String,
    pub go_version: String,
    pub gc_per_second: Reading,
    pub stw_p99: Reading,
    pub stw_max: Reading,
    pub time_to_stop_p99: Reading,
    pub runqueue_p99: Reading,
    pub involuntary_per_second: Reading,
    /// VMAs / the host's vm.max_map_count.
    pub vma_ratio: Reading,
    /// Open fds / the soft RLIMIT_NOFILE.
    pub fd_ratio: Reading,
    /// Seconds the cgroup was throttled per second.
    pub throttled_per_second: Reading,
}

/// A table column: what it shows and how it sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Pid,
    Comm,
    GoVersion,
    GcPerSecond,
    StwP99,
    StwMax,
    TimeToStopP99,
    RunqueueP99,
    InvoluntaryPerSecond,
    VmaPercent,
    FdPercent,
    Throttled,
}

/// How a column formats its readings.
#[derive(Debug, Clone, Copy)]
enum Format {
    Text,
    Rate,
    Duration,
    Percent,
    SecondsPerSecond,
}

/// The columns in table order: header, width at 80 columns (COMM takes what
/// is left), format, and the help line `?` shows.
pub const COLUMNS: [(Column, &str, u16, &str); 12] = [
    (Column::Pid, "PID", 7, "process id (as golens' /proc sees it)"),
    (Column::Comm, "COMM", 9, "process name (/proc/PID/comm)"),
    (Column::GoVersion, "GO", 7, "Go version from .go.buildinfo"),
    (Column::GcPerSecond, "GC/s", 5, "GC cycles per second over the window"),
    (Column::StwP99, "STW99", 6, "stop-the-world pause p99 over the window"),
    (Column::StwMax, "STWmax", 6, "longest stop-the-world pause in the window"),
    (Column::TimeToStopP99, "TTS99", 6, "time to stop the world, p99"),
    (Column::RunqueueP99, "RQ99", 6, "run-queue latency p99 (wakeup to on-CPU)"),
    (Column::InvoluntaryPerSecond, "INV/s", 5, "involuntary context switches per second"),
    (Column::VmaPercent, "VMA%", 4, "memory mappings / vm.max_map_count"),
    (Column::FdPercent, "FD%", 4, "open fds / RLIMIT_NOFILE (soft)"),
    (Column::Throttled, "THR", 4, "seconds its cgroup was CPU-throttled per second"),
];

impl Column {
    pub fn all() -> impl Iterator<Item = Column> {
        COLUMNS.iter().map(|c| c.0)
    }

    pub fn header(self) -> &'static str {
        COLUMNS.iter().find(|c| c.0 == self).map_or("?", |c| c.1)
    }

    /// The column `s` moves to.
    pub fn next(self) -> Column {
        let index = COLUMNS.iter().position(|c| c.0 == self).unwrap_or(0);
        COLUMNS[(index + 1) % COLUMNS.len()].0
    }

    /// Numbers sort largest first (the worst process on top); names A to Z.
    pub fn descending_by_default(self) -> bool {
        !matches!(self, Column::Pid | Column::Comm | Column::GoVersion)
    }

    pub fn is_numeric(self) -> bool {
        !matches!(self, Column::Comm | Column::GoVersion)
    }

    fn format(self) -> Format {
        match self {
            Column::Pid | Column::Comm | Column::GoVersion => Format::Text,
            Column::GcPerSecond | Column::InvoluntaryPerSecond => Format::Rate,
            Column::StwP99 | Column::StwMax | Column::TimeToStopP99 | Column::RunqueueP99 => {
                Format::Duration
            }
            Column::VmaPercent | Column::FdPercent => Format::Percent,
            Column::Throttled => Format::SecondsPerSecond,
        }
    }
}

impl Row {
    pub fn reading(&self, column: Column) -> Reading {
        match column {
            Column::Pid => Reading::Value(f64::from(self.pid)),
            Column::Comm | Column::GoVersion => Reading::Missing,
            Column::GcPerSecond => self.gc_per_second,
            Column::StwP99 => self.stw_p99,
            Column::StwMax => self.stw_max,
            Column::TimeToStopP99 => self.time_to_stop_p99,
            Column::RunqueueP99 => self.runqueue_p99,
            Column::InvoluntaryPerSecond => self.involuntary_per_second,
            Column::VmaPercent => self.vma_ratio,
            Column::FdPercent => self.fd_ratio,
            Column::Throttled => self.throttled_per_second,
        }
    }

    /// The text of one cell.
    pub fn cell(&self, column: Column) -> String {
        match column {
            Column::Pid => self.pid.to_string(),
            Column::Comm => self.comm.clone(),
            Column::GoVersion => short_go_version(&self.go_version),
            _ => format_reading(self.reading(column), column.format()),
        }
    }

    /// Whether the filter text (already lowercased) matches its comm or pid.
    pub fn matches(&self, filter: &str) -> bool {
        filter.is_empty()
            || self.comm.to_lowercase().contains(filter)
            || self.pid.to_string().contains(filter)
    }

    /// Order for `column`: values (in `descending` order or not), then
    /// "none", then "–"; ties by pid.
    pub fn compare(&self, other: &Row, column: Column, descending: bool) -> std::cmp::Ordering {
        let directed =
            |ordering: std::cmp::Ordering| if descending { ordering.reverse() } else { ordering };
        let by_column = match column {
            Column::Comm => directed(self.comm.cmp(&other.comm)),
            Column::GoVersion => {
                directed(version_key(&self.go_version).cmp(&version_key(&other.go_version)))
            }
            _ => {
                let (a, b) = (self.reading(column), other.reading(column));
                a.class().cmp(&b.class()).then_with(|| match (a.value(), b.value()) {
                    (Some(a), Some(b)) => directed(a.total_cmp(&b)),
                    _ => std::cmp::Ordering::Equal,
                })
            }
        };
        by_column.then_with(|| self.pid.cmp(&other.pid))
    }
}

/// "go1.21.13" -> "1.21.13" (the column is narrow; "unknown" stays).
pub fn short_go_version(version: &str) -> String {
    version.strip_prefix("go").unwrap_or(version).to_string()
}

/// Sorts "go1.9" before "go1.21".
fn version_key(version: &str) -> Vec<u64> {
    short_go_version(version)
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

fn format_reading(reading: Reading, format: Format) -> String {
    match reading {
        Reading::Missing => MISSING.to_string(),
        Reading::NoEvents => NO_EVENTS.to_string(),
        Reading::Value(value) => match format {
            Format::Text => value.to_string(),
            Format::Rate => format_rate(value),
            Format::Duration => format_duration(value),
            Format::Percent => format_percent(value),
            Format::SecondsPerSecond => format!("{value:.2}"),
        },
    }
}

/// A duration in at most 6 characters: 512ns, 8.2µs, 524µs, 2.1ms, 16.8ms, 134ms, 1.07s.
pub fn format_duration(seconds: f64) -> String {
    let scaled = |value: f64, unit: &str| {
        if value < 100.0 {
            format!("{value:.1}{unit}")
        } else {
            format!("{value:.0}{unit}")
        }
    };
    if seconds < 1e-6 {
        format!("{:.0}ns", seconds * 1e9)
    } else if seconds < 1e-3 {
        scaled(seconds * 1e6, "µs")
    } else if seconds < 1.0 {
        scaled(seconds * 1e3, "ms")
    } else if seconds < 100.0 {
        format!("{seconds:.2}s")
    } else {
        format!("{seconds:.0}s")
    }
}

/// A rate in at most 5 characters: 0.0, 4.2, 37, 1.2k, 52k, 1.3M.
pub fn format_rate(per_second: f64) -> String {
    if per_second < 10.0 {
        format!("{per_second:.1}")
    } else if per_second < 1000.0 {
        format!("{per_second:.0}")
    } else if per_second < 10_000.0 {
        format!("{:.1}k", per_second / 1e3)
    } else if per_second < 1e6 {
        format!("{:.0}k", per_second / 1e3)
    } else {
        format!("{:.1}M", per_second / 1e6)
    }
}

/// A ratio as a percentage in at most 4 characters: 0.3, 12, 100.
pub fn format_percent(ratio: f64) -> String {
    let percent = ratio * 100.0;
    if percent < 10.0 {
        format!("{percent:.1}")
    } else {
        format!("{percent:.0}")
    }
}

/// What the keys do (see `event::action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Up,
    Down,
    PageUp,
    PageDown,
    First,
    Last,
    NextSort,
    ReverseSort,
    StartFilter,
    FilterPush(char),
    FilterPop,
    /// Enter: keep the filter, leave typing.
    FilterKeep,
    /// Esc: clear the filter, leave typing.
    FilterClear,
    ToggleHelp,
}

/// The selected process's detail pane.
#[derive(Debug, Clone)]
pub struct Detail<'a> {
    pub process: &'a ProcessSnapshot,
    /// Where its time went over the window (None before a second snapshot).
    pub shares: Option<Shares>,
    /// The window's longest pause (upper bound, seconds) and how long before the latest
    /// snapshot its interval ended.
    pub worst_pause: Option<(f64, f64)>,
    /// Seconds between the window's first and last snapshot (at most about
    /// the window; less while top has not run that long).
    pub span_seconds: Option<f64>,
    /// Pause slots counted over the window; None when not measured.
    pub pause_slots: Option<Vec<u64>>,
    pub stw_measured: bool,
    pub runqueue_measured: bool,
    pub points: &'a VecDeque<IntervalPoint>,
}

/// Everything `golens top` shows.
#[derive(Debug)]
pub struct App {
    /// Where the snapshots come from ("agent at http://…", "local agent").
    pub source: String,
    /// The agent is golens top's own (started here, not --connect).
    pub local_agent: bool,
    /// Seconds rates and quantiles look back.
    pub window: f64,
    /// With --connect: only these pids / comms are shown (empty: all).
    pub only_pids: Vec<u32>,
    pub only_comms: Vec<String>,
    histories: BTreeMap<u32, ProcessHistory>,
    latest: Option<Snapshot>,
    pub sort: Column,
    pub descending: bool,
    pub filter: String,
    /// Typing a filter (after `/`): keys are text, not commands.
    pub filtering: bool,
    pub selected: Option<u32>,
    /// Rows the table showed last (for page up / down).
    pub page_rows: usize,
    pub show_help: bool,
    /// Trouble with the feed (connection lost, retrying...).
    pub status: Option<String>,
}

impl App {
    pub fn new(source: impl Into<String>, window: std::time::Duration) -> App {
        App {
            source: source.into(),
            local_agent: false,
            window: window.as_secs_f64(),
            only_pids: Vec::new(),
            only_comms: Vec::new(),
            histories: BTreeMap::new(),
            latest: None,
            sort: Column::StwP99,
            descending: Column::StwP99.descending_by_default(),
            filter: String::new(),
            filtering: false,
            selected: None,
            page_rows: 10,
            show_help: false,
            status: None,
        }
    }

    pub fn latest(&self) -> Option<&Snapshot> {
        self.latest.as_ref()
    }

    fn wanted(&self, process: &ProcessSnapshot) -> bool {
        (self.only_pids.is_empty() || self.only_pids.contains(&process.pid))
            && (self.only_comms.is_empty() || self.only_comms.contains(&process.comm))
    }

    /// Takes a new snapshot in: extends each process's window, forgets the
    /// processes that are gone.
    pub fn apply(&mut self, snapshot: Snapshot) {
        let timestamp = snapshot.timestamp;
        let mut seen = std::collections::BTreeSet::new();
        for process in &snapshot.processes {
            if !self.wanted(process) {
                continue;
            }
            seen.insert(process.pid);
            match self.histories.get_mut(&process.pid) {
                Some(history) => history.push(process, timestamp, self.window),
                None => {
                    self.histories.insert(process.pid, ProcessHistory::new(process, timestamp));
                }
            }
        }
        self.histories.retain(|pid, _| seen.contains(pid));
        self.latest = Some(snapshot);
        self.status = None;
        self.keep_selection_visible();
    }

    /// Every process's row, unfiltered and unsorted.
    pub fn all_rows(&self) -> Vec<Row> {
        let max_map_count = self.latest.as_ref().and_then(|s| s.host.max_map_count);
        self.histories.values().map(|h| h.row(max_map_count)).collect()
    }

    /// The rows shown: filtered, then sorted.
    pub fn rows(&self) -> Vec<Row> {
        let filter = self.filter.trim().to_lowercase();
        let mut rows: Vec<Row> =
            self.all_rows().into_iter().filter(|r| r.matches(&filter)).collect();
        rows.sort_by(|a, b| a.compare(b, self.sort, self.descending));
        rows
    }

    pub fn process_count(&self) -> usize {
        self.histories.len()
    }

    pub fn selected_index(&self, rows: &[Row]) -> Option<usize> {
        let selected = self.selected?;
        rows.iter().position(|row| row.pid == selected)
    }

    fn keep_selection_visible(&mut self) {
        let rows = self.rows();
        if self.selected_index(&rows).is_none() {
            self.selected = rows.first().map(|row| row.pid);
        }
    }

    fn move_selection(&mut self, by: isize) {
        let rows = self.rows();
        if rows.is_empty() {
            self.selected = None;
            return;
        }
        let current = self.selected_index(&rows).unwrap_or(0) as isize;
        let next = (current + by).clamp(0, rows.len() as isize - 1) as usize;
        self.selected = Some(rows[next].pid);
    }

    /// Applies a key's action; false when the user quits.
    pub fn handle(&mut self, action: Action) -> bool {
        let page = self.page_rows.max(1) as isize;
        match action {
            Action::Quit => return false,
            Action::Up => self.move_selection(-1),
            Action::Down => self.move_selection(1),
            Action::PageUp => self.move_selection(-page),
            Action::PageDown => self.move_selection(page),
            Action::First => self.move_selection(isize::MIN / 2),
            Action::Last => self.move_selection(isize::MAX / 2),
            Action::NextSort => {
                self.sort = self.sort.next();
                self.descending = self.sort.descending_by_default();
            }
            Action::ReverseSort => self.descending = !self.descending,
            Action::StartFilter => self.filtering = true,
            Action::FilterPush(c) => {
                self.filter.push(c);
                self.keep_selection_visible();
            }
            Action::FilterPop => {
                self.filter.pop();
                self.keep_selection_visible();
            }
            Action::FilterKeep => self.filtering = false,
            Action::FilterClear => {
                self.filter.clear();
                self.filtering = false;
                self.show_help = false;
                self.keep_selection_visible();
            }
            Action::ToggleHelp => self.show_help = !self.show_help,
        }
        true
    }

    /// The selected process's detail, when one is shown.
    pub fn detail(&self) -> Option<Detail<'_>> {
        let pid = self.selected?;
        self.selected_index(&self.rows())?; // none when filtered out
        let history = self.histories.get(&pid)?;
        let process = &history.latest;
        let stw_measured = process.probes_attached(STW_PAUSE_PROBES);
        let pause_slots = history
            .span()
            .and_then(|(first, last, _)| slot_delta(&last.stw_pause, &first.stw_pause))
            .filter(|_| stw_measured);
        let shares = history.span().map(|(first, last, seconds)| {
            let difference = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
            let ns = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e9);
            Shares::of(&TimeSpent {
                wall: seconds,
                stopped: stw_measured
                    .then(|| last.stw_pause_ns.saturating_sub(first.stw_pause_ns) as f64 / 1e9),
                waited: difference(ns(first.runqueue_ns), ns(last.runqueue_ns)),
                ran: difference(first.cpu_seconds, last.cpu_seconds),
                // Without a quota the counter stays put: 0.
                throttled: difference(first.cpu_throttled_seconds, last.cpu_throttled_seconds),
            })
        });
        let latest = history.samples.back().map_or(0.0, |s| s.timestamp);
        let worst_pause = history
            .points
            .iter()
            .filter(|p| p.timestamp > latest - self.window)
            .filter_map(|p| Some((p.stw_max?, latest - p.timestamp)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .filter(|_| stw_measured);
        Some(Detail {
            process,
            shares,
            worst_pause,
            span_seconds: history.span().map(|(_, _, seconds)| seconds),
            pause_slots,
            stw_measured,
            runqueue_measured: process.sched.is_some(),
            points: &history.points,
        })
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Snapshots built by hand for the tests of `app` and `ui`.
    use super::*;
    use crate::snapshot::{
        AgentSnapshot, GoRuntimeSnapshot, HostSnapshot, LimitsSnapshot, ProbeStatus, SchedSnapshot,
        SyscallSnapshot,
    };

    pub fn histogram(slots: &[(usize, u64)]) -> Log2Histogram {
        let mut histogram = Log2Histogram { slots: vec![0; 38], sum_ns: 0, count: 0 };
        for &(slot, count) in slots {
            histogram.slots[slot] += count;
            histogram.count += count;
            histogram.sum_ns += count * (1 << slot);
        }
        histogram
    }

    pub fn attached(names: &[&str]) -> Vec<ProbeStatus> {
        names
            .iter()
            .map(|name| ProbeStatus {
                probe: name.to_string(),
                function: format!("runtime.{name}"),
                attached: true,
                points: 1,
                reason: None,
                site: None,
                single_stepped: false,
            })
            .collect()
    }

    pub const ALL_PROBES: &[&str] = &[
        "gc_cycle_start",
        "gc_cycle_end",
        "stw_stop",
        "stw_stopped",
        "stw_started",
        "sysmon_preempt",
    ];

    /// A Go process with every probe attached.
    pub fn go_process(pid: u32, comm: &str) -> ProcessSnapshot {
        ProcessSnapshot {
            pid,
            comm: comm.into(),
            exe: format!("/srv/{comm}"),
            container_id: None,
            pod_uid: None,
            go_version: "go1.27.3".into(),
            stripped: false,
            pie: false,
            sched: Some(SchedSnapshot::default()),
            go: GoRuntimeSnapshot::default(),
            syscalls: SyscallSnapshot::default(),
            limits: LimitsSnapshot {
                open_fds: Some(64),
                max_fds: Some(1024),
                vmas: Some(655),
                cpu_throttled_seconds: Some(0.0),
                ..LimitsSnapshot::default()
            },
            probes: attached(ALL_PROBES),
        }
    }

    /// A process golens knows nothing of but its name: no probe, no limit.
    pub fn bare_process(pid: u32, comm: &str) -> ProcessSnapshot {
        ProcessSnapshot {
            sched: None,
            limits: LimitsSnapshot::default(),
            probes: Vec::new(),
            go_version: "unknown".into(),
            ..go_process(pid, comm)
        }
    }

    pub fn snapshot(timestamp: f64, collections: u64, processes: Vec<ProcessSnapshot>) -> Snapshot {
        Snapshot {
            timestamp,
            processes,
            host: HostSnapshot { max_map_count: Some(65530), ..HostSnapshot::default() },
            agent: AgentSnapshot { collections, ..AgentSnapshot::default() },
        }
    }

    /// Two snapshots one second apart with known differences:
    /// - 101 "api": 4 GC cycles; 100 pauses (98 in slot 14, 1 in 16, 1 in
    ///   20): p99 = slot 16's bound (131µs), max = slot 20's (2.1ms); time
    ///   to stop 100 in slot 10 (2.0µs); run queue 1000 in slot 12 (8.2µs)
    ///   and 20 in slot 22 (8.4ms, p99); 1500 involuntary switches;
    ///   0.25 s throttled.
    /// - 202 "worker": 1 GC cycle and no pause; 50 switches.
    /// - 303 "bare": nothing measured but its name.
    pub fn two_snapshots() -> (Snapshot, Snapshot) {
        let mut api = go_process(101, "api");
        api.go.gc_cycles = 10;
        api.go.stw_pause.insert("GC mark termination".into(), histogram(&[(16, 5)]));
        api.go.stw_time_to_stop.insert("GC mark termination".into(), histogram(&[(10, 5)]));
        api.sched = Some(SchedSnapshot {
            runqueue_latency: histogram(&[(12, 7)]),
            involuntary_switches: 500,
        });
        api.limits.cpu_throttled_seconds = Some(1.0);
        api.limits.cpu_seconds = Some(10.0);
        let mut worker = go_process(202, "worker");
        worker.go.gc_cycles = 3;
        worker.sched = Some(SchedSnapshot {
            runqueue_latency: histogram(&[(11, 4)]),
            involuntary_switches: 10,
        });
        worker.limits.open_fds = Some(900);
        let before =
            snapshot(1000.0, 7, vec![api.clone(), worker.clone(), bare_process(303, "bare")]);

        api.go.gc_cycles = 14;
        api.go
            .stw_pause
            .insert("GC mark termination".into(), histogram(&[(16, 5), (14, 60), (16, 1)]));
        api.go.stw_pause.insert("GC sweep termination".into(), histogram(&[(14, 38), (20, 1)]));
        api.go.stw_time_to_stop.insert("GC mark termination".into(), histogram(&[(10, 105)]));
        api.sched = Some(SchedSnapshot {
            runqueue_latency: histogram(&[(12, 1007), (22, 20)]),
            involuntary_switches: 2000,
        });
        api.limits.cpu_throttled_seconds = Some(1.25);
        api.limits.cpu_seconds = Some(10.5);
        worker.go.gc_cycles = 4;
        worker.sched = Some(SchedSnapshot {
            runqueue_latency: histogram(&[(11, 9)]),
            involuntary_switches: 60,
        });
        let after = snapshot(1001.0, 8, vec![api, worker, bare_process(303, "bare")]);
        (before, after)
    }

    pub fn app_with_two_snapshots() -> App {
        let mut app =
            App::new("agent at http://127.0.0.1:9477", std::time::Duration::from_secs(30));
        let (before, after) = two_snapshots();
        app.apply(before);
        app.apply(after);
        app
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::*, *};

    fn row(app: &App, pid: u32) -> Row {
        app.all_rows().into_iter().find(|r| r.pid == pid).expect("row")
    }

    #[test]
    fn quantiles_are_the_upper_bound_of_their_slot() {
        let mut slots = vec![0; 38];
        slots[14] = 98;
        slots[16] = 1;
        slots[20] = 1;
        assert_eq!(quantile_upper_bound(&slots, 0.99), Some(131_072e-9));
        assert_eq!(quantile_upper_bound(&slots, 0.5), Some(32_768e-9));
        assert_eq!(quantile_upper_bound(&slots, 1.0), Some(2_097_152e-9));
        assert_eq!(max_upper_bound(&slots), Some(2_097_152e-9));
        assert_eq!(quantile_upper_bound(&[0; 38], 0.99), None, "no event: no quantile");
        assert_eq!(max_upper_bound(&[0; 38]), None);
        // One event: every quantile is its slot.
        let mut one = vec![0; 38];
        one[9] = 1;
        assert_eq!(quantile_upper_bound(&one, 0.01), Some(1024e-9));
    }

    #[test]
    fn deltas_refuse_counters_that_went_backwards() {
        assert_eq!(slot_delta(&[5, 7, 1], &[2, 7, 0]), Some(vec![3, 0, 1]));
        assert_eq!(slot_delta(&[5, 7], &[2, 7, 1]), None, "a slot went down: a reset");
        assert_eq!(slot_delta(&[5, 7, 1], &[2]), Some(vec![3, 7, 1]), "new slots count from 0");
    }

    #[test]
    fn window_rates_and_quantiles_from_two_snapshots() {
        let app = app_with_two_snapshots();
        let api = row(&app, 101);
        assert_eq!(api.gc_per_second, Reading::Value(4.0));
        assert_eq!(api.stw_p99, Reading::Value(131_072e-9), "reasons are added up");
        assert_eq!(api.stw_max, Reading::Value(2_097_152e-9));
        assert_eq!(api.time_to_stop_p99, Reading::Value(2048e-9));
        assert_eq!(api.runqueue_p99, Reading::Value(8_388_608e-9));
        assert_eq!(api.involuntary_per_second, Reading::Value(1500.0));
        assert_eq!(api.throttled_per_second, Reading::Value(0.25));
        assert_eq!(api.fd_ratio, Reading::Value(64.0 / 1024.0));
        assert_eq!(api.vma_ratio, Reading::Value(655.0 / 65530.0));
        assert_eq!(api.cell(Column::StwP99), "131µs");
        assert_eq!(api.cell(Column::StwMax), "2.1ms");
        assert_eq!(api.cell(Column::GcPerSecond), "4.0");
        assert_eq!(api.cell(Column::InvoluntaryPerSecond), "1.5k");
        assert_eq!(api.cell(Column::FdPercent), "6.2");
        assert_eq!(api.cell(Column::VmaPercent), "1.0");
        assert_eq!(api.cell(Column::Throttled), "0.25");
        assert_eq!(api.cell(Column::GoVersion), "1.27.3");

        let worker = row(&app, 202);
        assert_eq!(worker.stw_p99, Reading::NoEvents, "measured, and no pause");
        assert_eq!(worker.cell(Column::StwP99), NO_EVENTS);
        assert_eq!(worker.cell(Column::GcPerSecond), "1.0");
    }

    #[test]
    fn what_a_process_cannot_supply_is_a_dash_never_zero() {
        let app = app_with_two_snapshots();
        let bare = row(&app, 303);
        for column in Column::all().filter(|c| c.is_numeric() && *c != Column::Pid) {
            assert_eq!(bare.cell(column), MISSING, "{column:?}");
        }
        assert_eq!(bare.cell(Column::GoVersion), "unknown");

        // One snapshot only: no window yet, so no rate and no quantile; the
        // ratios of the moment are there.
        let mut app = App::new("test", std::time::Duration::from_secs(30));
        app.apply(two_snapshots().0);
        let api = row(&app, 101);
        assert_eq!(api.cell(Column::GcPerSecond), MISSING);
        assert_eq!(api.cell(Column::StwP99), MISSING);
        assert_eq!(api.cell(Column::InvoluntaryPerSecond), MISSING);
        assert_eq!(api.cell(Column::FdPercent), "6.2");
    }

    #[test]
    fn a_probe_that_did_not_attach_hides_its_numbers() {
        let (mut before, mut after) = two_snapshots();
        for snapshot in [&mut before, &mut after] {
            let api = &mut snapshot.processes[0];
            let probe = api.probes.iter_mut().find(|p| p.probe == "stw_started").unwrap();
            probe.attached = false;
            probe.reason = Some("inlined".into());
        }
        let mut app = App::new("test", std::time::Duration::from_secs(30));
        app.apply(before);
        app.apply(after);
        let api = row(&app, 101);
        assert_eq!(api.stw_p99, Reading::Missing);
        assert_eq!(api.stw_max, Reading::Missing);
        assert_eq!(api.time_to_stop_p99, Reading::Value(2048e-9), "its own probes are attached");
        assert_eq!(api.gc_per_second, Reading::Value(4.0));
    }

    #[test]
    fn the_window_slides_and_keeps_a_baseline() {
        let mut app = App::new("test", std::time::Duration::from_secs(2));
        for second in 0..6u64 {
            let mut api = go_process(101, "api");
            // 1 cycle a second for 3 s, then 5 a second.
            api.go.gc_cycles = if second <= 3 { second } else { 3 + 5 * (second - 3) };
            app.apply(snapshot(1000.0 + second as f64, second + 1, vec![api]));
        }
        // Window [1003, 1005]: (13 - 3) / 2.
        assert_eq!(row(&app, 101).gc_per_second, Reading::Value(5.0));
        let history = &app.histories[&101];
        assert_eq!(history.samples.len(), 3);
        assert_eq!(history.points.len(), 5);
    }

    #[test]
    fn a_reset_counter_or_a_reused_pid_starts_the_window_again() {
        let mut app = App::new("test", std::time::Duration::from_secs(30));
        let mut api = go_process(101, "api");
        api.go.gc_cycles = 50;
        app.apply(snapshot(1000.0, 1, vec![api.clone()]));
        api.go.gc_cycles = 2; // the agent restarted
        app.apply(snapshot(1001.0, 1, vec![api.clone()]));
        assert_eq!(row(&app, 101).gc_per_second, Reading::Missing, "never a negative rate");
        api.go.gc_cycles = 4;
        app.apply(snapshot(1002.0, 2, vec![api]));
        assert_eq!(row(&app, 101).gc_per_second, Reading::Value(2.0));

        let reused = go_process(101, "other");
        app.apply(snapshot(1003.0, 3, vec![reused]));
        assert_eq!(row(&app, 101).comm, "other");
        assert_eq!(row(&app, 101).gc_per_second, Reading::Missing);
    }

    #[test]
    fn processes_that_left_are_forgotten() {
        let mut app = app_with_two_snapshots();
        app.apply(snapshot(1002.0, 9, vec![go_process(202, "worker")]));
        let pids: Vec<u32> = app.all_rows().iter().map(|r| r.pid).collect();
        assert_eq!(pids, [202]);
    }

    #[test]
    fn sorting_puts_values_first_and_dashes_last_in_both_directions() {
        let mut app = app_with_two_snapshots();
        let order = |app: &App| app.rows().iter().map(|r| r.pid).collect::<Vec<_>>();
        app.sort = Column::StwP99;
        app.descending = true;
        assert_eq!(order(&app), [101, 202, 303], "value, none, –");
        app.handle(Action::ReverseSort);
        assert_eq!(order(&app), [101, 202, 303], "– stays last when reversed");
        app.sort = Column::InvoluntaryPerSecond;
        app.descending = true;
        assert_eq!(order(&app), [101, 202, 303]);
        app.descending = false;
        assert_eq!(order(&app), [202, 101, 303]);
        app.sort = Column::Comm;
        app.descending = false;
        assert_eq!(order(&app), [101, 303, 202], "api, bare, worker");

        // `s` walks every column and comes back.
        let mut seen = vec![app.sort];
        for _ in 0..COLUMNS.len() {
            app.handle(Action::NextSort);
            seen.push(app.sort);
        }
        assert_eq!(seen.first(), seen.last());
        assert_eq!(app.sort, Column::Comm);
        app.handle(Action::NextSort);
        assert_eq!((app.sort, app.descending), (Column::GoVersion, false));
        app.handle(Action::NextSort);
        assert_eq!((app.sort, app.descending), (Column::GcPerSecond, true));
    }

    #[test]
    fn filtering_by_comm_or_pid_keeps_a_visible_selection() {
        let mut app = app_with_two_snapshots();
        app.sort = Column::Pid;
        app.descending = false;
        app.handle(Action::Down);
        app.handle(Action::Down);
        assert_eq!(app.selected, Some(303));
        app.handle(Action::StartFilter);
        assert!(app.filtering);
        for c in "WORK".chars() {
            app.handle(Action::FilterPush(c));
        }
        let pids: Vec<u32> = app.rows().iter().map(|r| r.pid).collect();
        assert_eq!(pids, [202], "case-insensitive comm match");
        assert_eq!(app.selected, Some(202), "the selection follows the filter");
        app.handle(Action::FilterKeep);
        assert!(!app.filtering);
        assert_eq!(app.filter, "WORK");
        app.handle(Action::StartFilter);
        app.handle(Action::FilterClear);
        assert!(app.filter.is_empty());
        for c in "10".chars() {
            app.handle(Action::FilterPush(c));
        }
        let pids: Vec<u32> = app.rows().iter().map(|r| r.pid).collect();
        assert_eq!(pids, [101], "pid match");
        app.handle(Action::FilterPop);
        app.handle(Action::FilterPop);
        assert_eq!(app.rows().len(), 3);
        for c in "nothing".chars() {
            app.handle(Action::FilterPush(c));
        }
        assert!(app.rows().is_empty());
        assert_eq!(app.selected, None);
        assert!(app.detail().is_none());
    }

    #[test]
    fn selection_moves_within_the_rows() {
        let mut app = app_with_two_snapshots();
        app.sort = Column::Pid;
        app.descending = false;
        assert_eq!(app.selected, Some(101), "the first row is selected at start");
        app.handle(Action::Up);
        assert_eq!(app.selected, Some(101));
        app.handle(Action::Last);
        assert_eq!(app.selected, Some(303));
        app.handle(Action::Down);
        assert_eq!(app.selected, Some(303));
        app.handle(Action::First);
        assert_eq!(app.selected, Some(101));
        assert!(!app.handle(Action::Quit));
    }

    #[test]
    fn only_pids_and_comms_limit_what_is_shown() {
        let mut app = App::new("test", std::time::Duration::from_secs(30));
        app.only_comms = vec!["worker".into()];
        app.apply(two_snapshots().0);
        let pids: Vec<u32> = app.all_rows().iter().map(|r| r.pid).collect();
        assert_eq!(pids, [202]);
    }

    #[test]
    fn the_detail_has_the_window_pauses_and_interval_points() {
        let mut app = app_with_two_snapshots();
        app.selected = Some(101);
        let detail = app.detail().expect("detail");
        let slots = detail.pause_slots.expect("pause slots");
        assert_eq!((slots[14], slots[16], slots[20]), (98, 1, 1));
        assert_eq!(
            detail.points.back(),
            Some(&IntervalPoint {
                timestamp: 1001.0,
                stw_p99: Some(131_072e-9),
                stw_max: Some(Log2Histogram::slot_upper_bound_seconds(20)),
                runqueue_p99: Some(8_388_608e-9)
            })
        );
        // Over the second: 2.72 ms of pauses (the histograms' sums), 88.0 ms on the run
        // queue against 0.5 s of CPU, and 0.25 s throttled.
        let shares = detail.shares.expect("shares over the window");
        assert!((shares.stopped.unwrap() - 0.002_719_744).abs() < 1e-9, "{shares:?}");
        assert!((shares.waiting.unwrap() - 0.087_982_08 / 0.587_982_08).abs() < 1e-9);
        assert_eq!(shares.throttled, Some(0.25));
        assert_eq!(shares.conclusion(), "mostly CPU throttling by the cgroup quota");
        assert_eq!(detail.worst_pause, Some((Log2Histogram::slot_upper_bound_seconds(20), 0.0)));
        // Without CPU time, no waiting share (never a zero); without the pause probes, no
        // stopped share and no worst pause.
        let mut app = app_with_two_snapshots();
        app.selected = Some(202);
        let worker = app.detail().expect("detail").shares.expect("shares");
        assert_eq!(worker.waiting, None);
        app.selected = Some(303);
        let bare = app.detail().expect("detail");
        assert_eq!(bare.shares.map(|s| (s.stopped, s.waiting)), Some((None, None)));
        assert_eq!(bare.worst_pause, None);
    }

    #[test]
    fn durations_rates_and_percentages_fit_their_columns() {
        assert_eq!(format_duration(512e-9), "512ns");
        assert_eq!(format_duration(8192e-9), "8.2µs");
        assert_eq!(format_duration(524_288e-9), "524µs");
        assert_eq!(format_duration(2_097_152e-9), "2.1ms");
        assert_eq!(format_duration(16_777_216e-9), "16.8ms");
        assert_eq!(format_duration(134_217_728e-9), "134ms");
        assert_eq!(format_duration(1.073741824), "1.07s");
        assert_eq!(format_duration(137.4), "137s");
        for slot in 0..38 {
            let text = format_duration(Log2Histogram::slot_upper_bound_seconds(slot));
            assert!(text.chars().count() <= 6, "{text}");
        }
        assert_eq!(format_rate(0.0), "0.0");
        assert_eq!(format_rate(37.4), "37");
        assert_eq!(format_rate(1234.0), "1.2k");
        assert_eq!(format_rate(52_000.0), "52k");
        assert_eq!(format_rate(1_300_000.0), "1.3M");
        assert_eq!(format_percent(0.003), "0.3");
        assert_eq!(format_percent(1.0), "100");
    }
}
