#!/usr/bin/env python3
"""golens' Grafana dashboards, Prometheus rules and their unit tests, from one place.

    python3 dashboards/generate.py           # rewrites dashboards/*.json, rules.yml, rules_test.yml
    python3 dashboards/generate.py --check   # exits 1, naming the file, when one is stale

Everything in dashboards/ except this script and README.md is generated: edit this file, run
it, commit both. Metric names are the README catalogue's (counters end in _total). Every panel
filters on the same template variables (built by `process()` and `host()` below), every query of
every panel and rule is run against a real Prometheus by tests/dashboards.rs, and the rules are
unit-tested by promtool (`promtool test rules dashboards/rules_test.yml`).

Standard library only (python3 is one of `cargo xtask setup`'s Debian packages).
"""

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Grafana 10.3 to 11.2 write 39; newer ones migrate it on load.
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

# ---------------------------------------------------------------------------------------------
# Selectors: every panel filters with the same template variables.

HOST_FILTERS = ['job=~"$job"', 'instance=~"$instance"']
PROCESS_FILTERS = HOST_FILTERS + [
    'comm=~"$comm"',
    'pid=~"$pid"',
    'container_id=~"$container_id"',
    'pod_uid=~"$pod_uid"',
]
# What a per-process series is grouped by on the detail dashboards.
PROCESS = "instance, comm, pid"
PROCESS_LEGEND = "{{comm}} {{pid}} @ {{instance}}"
SERVICE = "instance, comm"
SERVICE_LEGEND = "{{comm}} @ {{instance}}"


def process(metric, *extra):
    """A per-process series (labels pid, comm, container_id, pod_uid) under the variables."""
    return f"{metric}{{{', '.join(PROCESS_FILTERS + list(extra))}}}"


def host(metric, *extra):
    """A per-agent series (no process labels) under the variables."""
    return f"{metric}{{{', '.join(HOST_FILTERS + list(extra))}}}"


def quantile(q, histogram, by, *extra):
    """q-quantile of a per-process histogram over the rate interval, grouped by `by`."""
    buckets = process(f"{histogram}_bucket", *extra)
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({buckets}[{RATE}])))"


def mean(histogram, by, *extra):
    return (
        f"sum by ({by}) (rate({process(histogram + '_sum', *extra)}[{RATE}]))"
        f" / sum by ({by}) (rate({process(histogram + '_count', *extra)}[{RATE}]))"
    )


def count_or_zero(selector_expr, by):
    """How many series are 0 (e.g. not attached), by `by`: 0 rather than no data when none."""
    return f"count by ({by}) ({selector_expr} == 0) or 0 * count by ({by}) ({selector_expr})"


# The shared expressions: dashboards and rules say the same thing the same way.
def vma_ratio(peak, now, vmas_max):
    """VMAs against vm.max_map_count: the syscall family's peak where it runs, else /proc's count."""
    return f"({peak} or {now}) / on (job, instance) group_left {vmas_max}"


def gomaxprocs_per_quota_core(gomaxprocs, quota):
    return f"max without (source) ({gomaxprocs}) / {quota}"


# ---------------------------------------------------------------------------------------------
# Panels


def target(expr, legend="", *, instant=False, fmt=None):
    t = {"datasource": DATASOURCE, "editorMode": "code", "expr": expr, "legendFormat": legend}
    if instant:
        t.update({"instant": True, "range": False, "format": "table"})
    else:
        t.update({"instant": False, "range": True})
    if fmt:
        t["format"] = fmt
    return t


def thresholds(*steps):
    """steps: (value, color) pairs above the green base."""
    base = [{"color": "green", "value": None}]
    return {"mode": "absolute", "steps": base + [{"color": c, "value": v} for v, c in steps]}


def field_config(unit, *, min_=None, max_=None, steps=(), custom=None, mappings=None, color=None):
    defaults = {"unit": unit, "thresholds": thresholds(*steps)}
    if color:
        defaults["color"] = {"mode": color}
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if custom is not None:
        defaults["custom"] = custom
    if mappings:
        defaults["mappings"] = mappings
    return {"defaults": defaults, "overrides": []}


def timeseries(title, description, targets, unit, *, min_=0, max_=None, steps=(), line=False):
    """A time series; `line`: draw the thresholds (the limit) as a dashed line."""
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": 0,
        "thresholdsStyle": {"mode": "dashed" if line else "off"},
    }
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": field_config(
            unit, min_=min_, max_=max_, steps=steps, custom=custom, color="palette-classic"
        ),
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": ["max", "lastNotNull"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title, description, expr, unit, *, steps=(), legend="", mappings=None):
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, legend)],
        "fieldConfig": field_config(unit, steps=steps, mappings=mappings, color="thresholds"),
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
    }


def heatmap(title, description, expr):
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, "{{le}}", fmt="heatmap")],
        "fieldConfig": field_config("s"),
        "options": {
            "calculate": False,
            "yAxis": {"axisPlacement": "left", "unit": "s"},
            "rowsFrame": {"layout": "auto"},
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "exponent": 0.5,
                "steps": 64,
                "fill": "dark-orange",
                "reverse": False,
            },
            "cellGap": 1,
            "filterValues": {"le": 1e-09},
            "showValue": "never",
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "legend": {"show": True},
        },
    }


STATUS_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "pass", "color": "green", "index": 0},
            "1": {"text": "warn", "color": "yellow", "index": 1},
            "2": {"text": "fail", "color": "red", "index": 2},
        },
    }
]
ATTACHED_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "not attached", "color": "red", "index": 0},
            "1": {"text": "attached", "color": "green", "index": 1},
        },
    }
]


def table(title, description, expr, *, sort_desc=True, mappings=None, hide=(), unit="none"):
    """An instant query as a table, one row per series; Time, __name__ and job hidden."""
    excluded = {name: True for name in ("Time", "__name__", "job", *hide)}
    config = field_config(unit, mappings=mappings)
    if mappings:
        config["defaults"]["custom"] = {"cellOptions": {"type": "color-background"}}
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, instant=True)],
        "fieldConfig": config,
        "options": {"showHeader": True, "sortBy": [{"displayName": "Value", "desc": sort_desc}]},
        "transformations": [
            {"id": "organize", "options": {"excludeByName": excluded, "renameByName": {}}}
        ],
    }


# ---------------------------------------------------------------------------------------------
# Template variables


def query_variable(name, label, query, *, include_all=True, multi=True):
    variable = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "hide": 0,
        "includeAll": include_all,
        "multi": multi,
        "options": [],
        "skipUrlSync": False,
    }
    if include_all:
        # `.*` also matches a series without the label (container_id, pod_uid on a bare host).
        variable["allValue"] = ".*"
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return variable


PROCESS_INFO = 'golens_process_info{job=~"$job", instance=~"$instance"'


def variables(extra=()):
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
        },
        # The scrape job of the agents (e.g. `golens`, or `kubernetes-pods` with annotations).
        query_variable(
            "job", "job", "label_values(golens_agent_ebpf_available, job)", include_all=False,
            multi=False,
        ),
        query_variable(
            "instance",
            "instance (node)",
            'label_values(golens_agent_ebpf_available{job=~"$job"}, instance)',
        ),
        query_variable("comm", "comm (service)", f"label_values({PROCESS_INFO}}}, comm)"),
        query_variable("pid", "pid", f'label_values({PROCESS_INFO}, comm=~"$comm"}}, pid)'),
        query_variable(
            "container_id",
            "container_id",
            f'label_values({PROCESS_INFO}, comm=~"$comm", pid=~"$pid"}}, container_id)',
        ),
        query_variable(
            "pod_uid",
            "pod_uid",
            f'label_values({PROCESS_INFO}, comm=~"$comm", pid=~"$pid"}}, pod_uid)',
        ),
        *extra,
    ]


# ---------------------------------------------------------------------------------------------
# Dashboards


class Board:
    """A dashboard laid out left to right in rows of 24 columns."""

    def __init__(self, uid, file, title, description, extra_variables=()):
        self.uid, self.file, self.title, self.description = uid, file, title, description
        self.variables = variables(extra_variables)
        self.panels = []
        self.x = self.y = self.line_height = 0

    def row(self, title):
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "id": len(self.panels) + 1,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel, w=12, h=8):
        if self.x + w > 24:
            self._newline()
        panel = {"id": len(self.panels) + 1, "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y}, **panel}
        for i, t in enumerate(panel.get("targets", [])):
            t["refId"] = chr(ord("A") + i)
        self.panels.append(panel)
        self.x += w
        self.line_height = max(self.line_height, h)

    def _newline(self):
        if self.x > 0:
            self.y += self.line_height
        self.x = self.line_height = 0

    def json(self):
        return {
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    }
                ]
            },
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [
                {
                    "title": "golens dashboards",
                    "type": "dashboards",
                    "tags": ["golens"],
                    "asDropdown": True,
                    "icon": "external link",
                    "includeVars": True,
                    "keepTime": True,
                    "targetBlank": False,
                    "tooltip": "",
                    "url": "",
                }
            ],
            "panels": self.panels,
            "refresh": "30s",
            "schemaVersion": SCHEMA_VERSION,
            "tags": ["golens", "go", "ebpf"],
            "templating": {"list": self.variables},
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }


RATIO_STEPS = ((0.5, "yellow"), (0.9, "red"))


def fleet_overview():
    b = Board(
        "golens-fleet",
        "fleet-overview.json",
        "golens / Fleet overview",
        "Every watched Go service on every node: the worst stop-the-world pause, GC rate, "
        "run-queue latency, and how close each is to its limits.",
    )
    b.row("At a glance")
    b.add(stat("Watched Go processes", "golens_agent_tracked_processes, summed over the agents.",
               f"sum({host('golens_agent_tracked_processes')})", "none"), w=4, h=4)
    b.add(stat("Agents degraded", "Agents running without eBPF (golens_agent_ebpf_available 0): "
               "they serve only what /proc gives. See the agent health dashboard.",
               f"count({host('golens_agent_ebpf_available')} == 0) or vector(0)", "none",
               steps=((1, "red"),)), w=4, h=4)
    b.add(stat("Worst STW pause p99", "The highest per-process p99 of stop-the-world pauses.",
               f"max({quantile(0.99, 'golens_go_stw_pause_seconds', PROCESS)})", "s",
               steps=((0.005, "yellow"), (0.01, "red"))), w=4, h=4)
    b.add(stat("GC cycles per second", "GC cycles started per second, all watched processes.",
               f"sum(rate({process('golens_go_gc_cycles_total')}[{RATE}]))", "ops"), w=4, h=4)
    b.add(stat("Host checks failing", "golens doctor checks that fail (status 2) on some node.",
               f"count({host('golens_host_check_status')} == 2) or vector(0)", "none",
               steps=((1, "red"),)), w=4, h=4)
    b.add(stat("Host checks warning", "golens doctor checks that warn or could not be read "
               "(status 1); `golens doctor` on the node explains each.",
               f"count({host('golens_host_check_status')} == 1) or vector(0)", "none",
               steps=((1, "yellow"),)), w=4, h=4)

    b.row("Go runtime, per service (worst process)")
    b.add(timeseries(
        "Worst STW pause p99", "Per service and node, the worst process's p99 of stop-the-world "
        "pauses (every reason).",
        [target(f"max by ({SERVICE}) ({quantile(0.99, 'golens_go_stw_pause_seconds', PROCESS)})",
                SERVICE_LEGEND)], "s", steps=((0.01, "red"),), line=True), w=8)
    b.add(timeseries(
        "GC cycles per second", "GC cycles started per second, summed over a service's processes.",
        [target(f"sum by ({SERVICE}) (rate({process('golens_go_gc_cycles_total')}[{RATE}]))",
                SERVICE_LEGEND)], "ops"), w=8)
    b.add(timeseries(
        "Run-queue latency p99", "Per service and node, the worst process's p99 of the time its "
        "threads waited for a CPU.",
        [target(f"max by ({SERVICE}) ({quantile(0.99, 'golens_sched_runqueue_latency_seconds', PROCESS)})",
                SERVICE_LEGEND)], "s", steps=((0.05, "red"),), line=True), w=8)

    b.row("Pressure against limits (worst process; 1 is the limit)")
    b.add(timeseries(
        "Open fds / RLIMIT_NOFILE", "golens_process_open_fds / golens_process_max_fds: at 1, "
        "open() and accept() fail with EMFILE.",
        [target(f"max by ({SERVICE}) ({process('golens_process_open_fds')} / "
                f"{process('golens_process_max_fds')})", SERVICE_LEGEND)],
        "percentunit", max_=1, steps=RATIO_STEPS, line=True), w=8)
    b.add(timeseries(
        "VMAs / vm.max_map_count", "Memory mappings (the peak between collections where the vma "
        "family runs, else the count now) against vm.max_map_count: at 1, mmap fails and the Go "
        "runtime dies.",
        [target(f"max by ({SERVICE}) ({vma_ratio(process('golens_process_vmas_peak'), process('golens_process_vmas'), host('golens_host_vmas_max'))})",
                SERVICE_LEGEND)],
        "percentunit", max_=1, steps=RATIO_STEPS, line=True), w=8)
    b.add(timeseries(
        "GOMAXPROCS / CPU quota", "GOMAXPROCS against the cgroup's CPU quota in cores: above 1, "
        "more Ps than CPU time, so the quota throttles the process. Only processes with a quota.",
        [target(f"max by ({SERVICE}) ({gomaxprocs_per_quota_core(process('golens_go_gomaxprocs'), process('golens_cgroup_cpu_quota_cores'))})",
                SERVICE_LEGEND)],
        "none", steps=((1.0001, "red"),), line=True), w=8)
    b.add(timeseries(
        "CPU throttled (seconds per second)", "rate(golens_cgroup_cpu_throttled_seconds_total): "
        "time the service's cgroup was throttled by its CPU quota.",
        [target(f"max by ({SERVICE}) (rate({process('golens_cgroup_cpu_throttled_seconds_total')}[{RATE}]))",
                SERVICE_LEGEND)], "s", steps=((0.1, "red"),), line=True), w=8)
    b.add(timeseries(
        "Ephemeral ports used / range", "Local TCP ports in use inside ip_local_port_range: at 1, "
        "connect() fails with EADDRNOTAVAIL.",
        [target(f"max by (instance) ({host('golens_host_ephemeral_ports_used')} / "
                f"{host('golens_host_ephemeral_port_range_size')})", "{{instance}}")],
        "percentunit", max_=1, steps=RATIO_STEPS, line=True), w=8)
    b.add(timeseries(
        "Conntrack entries / nf_conntrack_max", "At 1 the kernel drops new connections "
        "(\"nf_conntrack: table full\"). No data where conntrack is not loaded.",
        [target(f"max by (instance) ({host('golens_host_conntrack_entries')} / "
                f"{host('golens_host_conntrack_max')})", "{{instance}}")],
        "percentunit", max_=1, steps=RATIO_STEPS, line=True), w=8)
    b.add(table(
        "Host checks (golens doctor)", "golens doctor's checks on each node, worst first: run "
        "`golens doctor` there for the value, why it matters and the fix.",
        host("golens_host_check_status"), mappings=STATUS_MAPPINGS), w=12, h=8)
    b.add(timeseries(
        "Host checks not passing", "Per node, how many checks warn (1) or fail (2).",
        [target(f"count by (instance) ({host('golens_host_check_status')} > 0) or 0 * count by "
                f"(instance) ({host('golens_host_check_status')})", "{{instance}}")],
        "none", steps=((1, "red"),), line=True), w=12, h=8)

    b.row("Watched processes")
    b.add(table("Go processes", "Every watched Go process, with its Go version and executable.",
                process("golens_process_info"), hide=("Value",)), w=24, h=8)
    return b


def gc_and_stw():
    reason = query_variable(
        "reason", "STW reason",
        f"label_values({process('golens_go_stw_pause_seconds_count')}, reason)",
    )
    b = Board(
        "golens-gc-stw",
        "gc-and-stw.json",
        "golens / GC and stop-the-world",
        "Per process: stop-the-world pauses by the runtime's own reason, how long stopping took, "
        "the stopped tail after mark termination, GC cycles and sysmon preemptions.",
        extra_variables=[reason],
    )
    r = 'reason=~"$reason"'
    legend = PROCESS_LEGEND + " {{reason}}"
    b.row("Stop-the-world pauses")
    b.add(timeseries("Pause p99 by reason", "p99 of stop-the-world pauses (the runtime's own "
                     "window: what go_gc_duration_seconds reports).",
                     [target(quantile(0.99, "golens_go_stw_pause_seconds", PROCESS + ", reason", r), legend)],
                     "s", steps=((0.01, "red"),), line=True), w=8)
    b.add(timeseries("Pause p50 by reason", "Median stop-the-world pause.",
                     [target(quantile(0.5, "golens_go_stw_pause_seconds", PROCESS + ", reason", r), legend)],
                     "s"), w=8)
    b.add(timeseries("Longest pause by reason", "Upper bound of the highest histogram bucket hit "
                     "in the interval (buckets are powers of two of nanoseconds).",
                     [target(quantile(1, "golens_go_stw_pause_seconds", PROCESS + ", reason", r), legend)],
                     "s"), w=8)
    b.add(timeseries("Pauses per second by reason", "Stop-the-world pauses per second.",
                     [target(f"sum by ({PROCESS}, reason) (rate({process('golens_go_stw_pause_seconds_count', r)}[{RATE}]))",
                             legend)], "ops"), w=8)
    b.add(timeseries("Mean pause by reason", "Sum of pause time over the number of pauses.",
                     [target(mean("golens_go_stw_pause_seconds", PROCESS + ", reason", r), legend)],
                     "s"), w=8)
    b.add(timeseries("Share of time stopped", "Seconds per second the world was stopped "
                     "(all the selected reasons).",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_go_stw_pause_seconds_sum', r)}[{RATE}]))",
                             PROCESS_LEGEND)], "percentunit"), w=8)
    b.add(heatmap("Pause distribution", "Stop-the-world pauses of the selected processes and "
                  "reasons, per bucket.",
                  f"sum by (le) (rate({process('golens_go_stw_pause_seconds_bucket', r)}[{RATE}]))"),
          w=24)

    b.row("Time to stop and stopped tail")
    b.add(timeseries("Time to stop p50 / p99 by reason", "How long the runtime waited for every "
                     "goroutine to stop (a goroutine in a tight loop without preemption points "
                     "delays every pause).",
                     [target(quantile(0.5, "golens_go_stw_time_to_stop_seconds", PROCESS + ", reason", r), "p50 " + legend),
                      target(quantile(0.99, "golens_go_stw_time_to_stop_seconds", PROCESS + ", reason", r), "p99 " + legend)],
                     "s"), w=12)
    b.add(timeseries("Stopped tail after mark termination p50 / p99", "golens_go_stw_tail_seconds: "
                     "how long the world stayed stopped after the runtime's clock ended a "
                     "mark-termination pause; no runtime metric counts it.",
                     [target(quantile(0.5, "golens_go_stw_tail_seconds", PROCESS), "p50 " + PROCESS_LEGEND),
                      target(quantile(0.99, "golens_go_stw_tail_seconds", PROCESS), "p99 " + PROCESS_LEGEND),
                      target(mean("golens_go_stw_tail_seconds", PROCESS), "mean " + PROCESS_LEGEND)],
                     "s"), w=12)

    b.row("GC cycles")
    b.add(timeseries("GC cycles per second", "GC cycles started per second.",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_go_gc_cycles_total')}[{RATE}]))",
                             PROCESS_LEGEND)], "ops"), w=8)
    b.add(timeseries("GC cycle duration p50 / p99", "From a cycle's start to the end of mark "
                     "termination: sweep termination, concurrent mark and mark termination.",
                     [target(quantile(0.5, "golens_go_gc_cycle_duration_seconds", PROCESS), "p50 " + PROCESS_LEGEND),
                      target(quantile(0.99, "golens_go_gc_cycle_duration_seconds", PROCESS), "p99 " + PROCESS_LEGEND)],
                     "s"), w=8)
    b.add(timeseries("Share of time a GC cycle runs", "Seconds per second inside a GC cycle: "
                     "near 1, a new cycle starts as soon as the last ends (GC thrashing).",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_go_gc_cycle_duration_seconds_sum')}[{RATE}]))",
                             PROCESS_LEGEND)], "percentunit", max_=1, steps=((0.8, "red"),), line=True), w=8)
    b.add(timeseries("Sysmon preemptions per second", "Goroutines sysmon asked to yield after "
                     "running more than 10 ms without a preemption point.",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_go_sysmon_preemptions_total')}[{RATE}]))",
                             PROCESS_LEGEND)], "ops"), w=12)
    b.add(table("Runtime probes", "Each runtime probe of each process: a metric whose probes are "
                "not all attached is not exported for that process (`golens list` says why).",
                process("golens_probe_attached"), sort_desc=False, mappings=ATTACHED_MAPPINGS), w=12)
    return b


def scheduler_and_cpu():
    b = Board(
        "golens-sched-cpu",
        "scheduler-and-cpu.json",
        "golens / Scheduler and CPU",
        "Per process: run-queue latency, involuntary switches, CPU quota and throttling, "
        "GOMAXPROCS, netpoll waits and timer lateness.",
    )
    b.row("Run queue")
    b.add(timeseries("Run-queue latency p50 / p90 / p99", "Time the process's threads waited on a "
                     "run queue, from wakeup (or preemption) to running.",
                     [target(quantile(q, "golens_sched_runqueue_latency_seconds", PROCESS), f"p{int(q * 100)} " + PROCESS_LEGEND)
                      for q in (0.5, 0.9, 0.99)], "s", steps=((0.05, "red"),), line=True), w=12)
    b.add(heatmap("Run-queue latency distribution", "Run-queue waits of the selected processes, "
                  "per bucket.",
                  f"sum by (le) (rate({process('golens_sched_runqueue_latency_seconds_bucket')}[{RATE}]))"),
          w=12)
    b.add(timeseries("Threads waiting for a CPU", "Seconds waited on a run queue per second: the "
                     "average number of the process's threads runnable but not running.",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_sched_runqueue_latency_seconds_sum')}[{RATE}]))",
                             PROCESS_LEGEND)], "none"), w=8)
    b.add(timeseries("Mean run-queue latency", "Total wait over the number of waits.",
                     [target(mean("golens_sched_runqueue_latency_seconds", PROCESS), PROCESS_LEGEND)],
                     "s"), w=8)
    b.add(timeseries("Involuntary context switches per second", "Times a thread left the CPU while "
                     "still runnable (preempted).",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_sched_involuntary_switches_total')}[{RATE}]))",
                             PROCESS_LEGEND)], "ops"), w=8)

    b.row("CPU quota")
    b.add(timeseries("CPU throttled (seconds per second)", "Time the process's cgroup was "
                     "throttled by its CPU quota.",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_cgroup_cpu_throttled_seconds_total')}[{RATE}]))",
                             PROCESS_LEGEND)], "s", steps=((0.1, "red"),), line=True), w=12)
    b.add(timeseries("GOMAXPROCS and CPU quota (cores)", "GOMAXPROCS (by where it comes from: "
                     "observed is the runtime's own value, read from its memory) and "
                     "the cgroup's quota in cores: more Ps than quota means throttling. Set "
                     "GOMAXPROCS to the quota rounded up, or use Go 1.25+.",
                     [target(process("golens_go_gomaxprocs"), "GOMAXPROCS ({{source}}) " + PROCESS_LEGEND),
                      target(process("golens_cgroup_cpu_quota_cores"), "quota " + PROCESS_LEGEND)],
                     "none"), w=12)

    b.row("Netpoll and timers")
    b.add(timeseries("Netpoll wait p50 / p99", "Blocking epoll waits of the Go netpoller: how "
                     "long each lasted.",
                     [target(quantile(0.5, "golens_go_netpoll_wait_seconds", PROCESS), "p50 " + PROCESS_LEGEND),
                      target(quantile(0.99, "golens_go_netpoll_wait_seconds", PROCESS), "p99 " + PROCESS_LEGEND)],
                     "s"), w=8)
    b.add(timeseries("Blocking netpoll waits per second", "epoll_pwait calls with a timeout other "
                     "than 0.",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_go_netpoll_wait_seconds_count')}[{RATE}]))",
                             PROCESS_LEGEND)], "ops"), w=8)
    b.add(timeseries("timerfd_settime per second", "timerfd_settime() calls.",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_timerfd_settime_total')}[{RATE}]))",
                             PROCESS_LEGEND)], "ops"), w=8)
    b.add(timeseries("Timer lateness p50 / p99", "How much later than asked timed waits returned "
                     "(sleeps, epoll timeouts; sysmon's own short sleeps included).",
                     [target(quantile(0.5, "golens_timer_lateness_seconds", PROCESS), "p50 " + PROCESS_LEGEND),
                      target(quantile(0.99, "golens_timer_lateness_seconds", PROCESS), "p99 " + PROCESS_LEGEND)],
                     "s"), w=8)
    b.add(timeseries("Late timed waits per second", "Timed waits that timed out, per second.",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_timer_lateness_seconds_count')}[{RATE}]))",
                             PROCESS_LEGEND)], "ops"), w=8)
    b.add(heatmap("Timer lateness distribution", "Lateness of the selected processes' timed "
                  "waits, per bucket.",
                  f"sum by (le) (rate({process('golens_timer_lateness_seconds_bucket')}[{RATE}]))"),
          w=8)
    b.add(timeseries("runtime.netpoll calls per second, by mode", "Calls of the Go netpoller "
                     "(opt-in probe family gonetpoll: empty unless golens runs with --probes "
                     "...,gonetpoll): nonblocking (a thread looking for work polls), blocking (the "
                     "last idle thread waits for I/O), timed (it waits until the next timer at "
                     "most).",
                     [target(f"sum by ({PROCESS}, mode) (rate({process('golens_go_netpoll_calls_total')}[{RATE}]))",
                             "{{mode}} " + PROCESS_LEGEND)], "ops"), w=24)
    return b


def pressure():
    b = Board(
        "golens-pressure",
        "pressure-against-limits.json",
        "golens / Pressure against limits",
        "Each limit a Go service can run into, as the value with its limit and as a ratio "
        "(1 is the limit), with the failures that exhaustion causes.",
    )
    b.row("File descriptors")
    b.add(timeseries("Open fds and RLIMIT_NOFILE", "Open file descriptors and the soft "
                     "RLIMIT_NOFILE (Go 1.19+ raises its soft limit to the hard one at start).",
                     [target(process("golens_process_open_fds"), "open " + PROCESS_LEGEND),
                      target(process("golens_process_max_fds"), "limit " + PROCESS_LEGEND)],
                     "none"), w=8)
    b.add(timeseries("Open fds / RLIMIT_NOFILE", "At 1, open(), socket() and accept() fail with "
                     "EMFILE.",
                     [target(f"{process('golens_process_open_fds')} / {process('golens_process_max_fds')}",
                             PROCESS_LEGEND)], "percentunit", max_=1, steps=RATIO_STEPS, line=True), w=8)
    b.add(timeseries("EMFILE / ENFILE failures per second", "fd-creating syscalls that failed: "
                     "EMFILE is the process's RLIMIT_NOFILE, ENFILE the host's fs.file-max.",
                     [target(f"sum by ({PROCESS}, errno) (rate({process('golens_process_fd_exhaustion_total')}[{RATE}]))",
                             PROCESS_LEGEND + " {{errno}}")], "ops", steps=((0.0001, "red"),)), w=8)
    b.add(timeseries("Host file handles and fs.file-max", "fs.file-nr's allocated handles and "
                     "fs.file-max.",
                     [target(host("golens_host_open_files"), "allocated {{instance}}"),
                      target(host("golens_host_max_files"), "limit {{instance}}")], "none"), w=12)
    b.add(timeseries("Host file handles / fs.file-max", "At 1, every process on the node gets "
                     "ENFILE.",
                     [target(f"{host('golens_host_open_files')} / {host('golens_host_max_files')}",
                             "{{instance}}")], "percentunit", max_=1, steps=RATIO_STEPS, line=True), w=12)

    b.row("Memory mappings")
    b.add(timeseries("VMAs and vm.max_map_count", "Memory mappings: the peak between collections "
                     "(vma family), the count now (/proc/PID/maps), and the node's limit.",
                     [target(process("golens_process_vmas_peak"), "peak " + PROCESS_LEGEND),
                      target(process("golens_process_vmas"), "now " + PROCESS_LEGEND),
                      target(host("golens_host_vmas_max"), "limit {{instance}}")], "none"), w=12)
    b.add(timeseries("VMAs / vm.max_map_count", "At 1, mmap fails with ENOMEM and the Go runtime "
                     "dies (\"fatal error: runtime: cannot allocate memory\").",
                     [target(vma_ratio(process("golens_process_vmas_peak"), process("golens_process_vmas"),
                                       host("golens_host_vmas_max")), PROCESS_LEGEND)],
                     "percentunit", max_=1, steps=RATIO_STEPS, line=True), w=12)

    b.row("Ephemeral ports and sockets")
    b.add(timeseries("Ephemeral ports used and range size", "Distinct local TCP ports in use "
                     "inside net.ipv4.ip_local_port_range, and the range's size.",
                     [target(host("golens_host_ephemeral_ports_used"), "used {{instance}}"),
                      target(host("golens_host_ephemeral_port_range_size"), "range {{instance}}")],
                     "none"), w=8)
    b.add(timeseries("Ephemeral ports used / range", "At 1, connect() fails with EADDRNOTAVAIL.",
                     [target(f"{host('golens_host_ephemeral_ports_used')} / {host('golens_host_ephemeral_port_range_size')}",
                             "{{instance}}")], "percentunit", max_=1, steps=RATIO_STEPS, line=True), w=8)
    b.add(timeseries("connect() EADDRNOTAVAIL per second", "connect() calls that found no free "
                     "ephemeral port.",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_process_connect_eaddrnotavail_total')}[{RATE}]))",
                             PROCESS_LEGEND)], "ops", steps=((0.0001, "red"),)), w=8)
    b.add(timeseries("TIME_WAIT sockets", "TCP sockets in TIME_WAIT (each holds its port for 60 s), "
                     "against the ephemeral range.",
                     [target(host("golens_host_tcp_time_wait_sockets"), "TIME_WAIT {{instance}}"),
                      target(host("golens_host_ephemeral_port_range_size"), "range {{instance}}")],
                     "none"), w=12)
    b.add(timeseries("Listen queue overflows per second", "Connections dropped because an accept "
                     "queue was full (TcpExt ListenOverflows): raise net.core.somaxconn and the "
                     "listener's backlog, or accept faster.",
                     [target(f"sum by (instance) (rate({host('golens_host_listen_overflows_total')}[{RATE}]))",
                             "{{instance}}")], "ops", steps=((0.0001, "red"),)), w=12)

    b.row("Connection tracking")
    b.add(timeseries("Conntrack entries and nf_conntrack_max", "No data where conntrack is not "
                     "loaded.",
                     [target(host("golens_host_conntrack_entries"), "entries {{instance}}"),
                      target(host("golens_host_conntrack_max"), "limit {{instance}}")], "none"), w=12)
    b.add(timeseries("Conntrack entries / nf_conntrack_max", "At 1 the kernel drops new "
                     "connections (\"nf_conntrack: table full, dropping packet\").",
                     [target(f"{host('golens_host_conntrack_entries')} / {host('golens_host_conntrack_max')}",
                             "{{instance}}")], "percentunit", max_=1, steps=RATIO_STEPS, line=True), w=12)

    b.row("CPU quota")
    b.add(timeseries("GOMAXPROCS / CPU quota", "Above 1 the process has more Ps than CPU time: "
                     "the quota throttles it mid-GC.",
                     [target(gomaxprocs_per_quota_core(process("golens_go_gomaxprocs"),
                                                       process("golens_cgroup_cpu_quota_cores")),
                             PROCESS_LEGEND)], "none", steps=((1.0001, "red"),), line=True), w=12)
    b.add(timeseries("CPU throttled (seconds per second)", "Time the process's cgroup was "
                     "throttled by its CPU quota.",
                     [target(f"sum by ({PROCESS}) (rate({process('golens_cgroup_cpu_throttled_seconds_total')}[{RATE}]))",
                             PROCESS_LEGEND)], "s", steps=((0.1, "red"),), line=True), w=12)

    b.row("Host checks")
    b.add(table("golens doctor checks", "0 pass, 1 warn (or could not be read), 2 fail: run "
                "`golens doctor` on the node for the value, why and the fix.",
                host("golens_host_check_status"), mappings=STATUS_MAPPINGS), w=24)
    return b


def agent_health():
    b = Board(
        "golens-agent",
        "agent-health.json",
        "golens / Agent health",
        "The agents themselves: eBPF available, programs and runtime probes attached, processes "
        "watched and skipped, kernel drops, and what collecting and scraping cost.",
    )
    b.row("At a glance")
    b.add(stat("Agents", "Agents exporting golens metrics.",
               f"count({host('golens_agent_ebpf_available')})", "none"), w=4, h=4)
    b.add(stat("Degraded agents", "golens_agent_ebpf_available 0: no BTF, a missing capability "
               "or bpf() blocked; the agent's log says which.",
               f"count({host('golens_agent_ebpf_available')} == 0) or vector(0)", "none",
               steps=((1, "red"),)), w=4, h=4)
    b.add(stat("Watched Go processes", "golens_agent_tracked_processes, summed.",
               f"sum({host('golens_agent_tracked_processes')})", "none"), w=4, h=4)
    b.add(stat("eBPF programs not attached", "golens_agent_program_attached 0, over every agent.",
               f"count({host('golens_agent_program_attached')} == 0) or vector(0)", "none",
               steps=((1, "red"),)), w=4, h=4)
    b.add(stat("Runtime probes not attached", "golens_probe_attached 0, over every watched process.",
               f"count({process('golens_probe_attached')} == 0) or vector(0)", "none",
               steps=((1, "red"),)), w=4, h=4)
    b.add(stat("Kernel drops per second", "Work the kernel side dropped (a full map or ring "
               "buffer).",
               f"sum(rate({host('golens_agent_kernel_drops_total')}[{RATE}])) or vector(0)", "ops",
               steps=((0.0001, "red"),)), w=4, h=4)

    b.row("Agents")
    b.add(timeseries("eBPF available", "1 when the agent's eBPF programs are loaded; 0 when it "
                     "runs degraded (only /proc).",
                     [target(host("golens_agent_ebpf_available"), "{{instance}}")], "none", max_=1), w=8)
    b.add(timeseries("Watched Go processes", "Go processes each agent watches.",
                     [target(host("golens_agent_tracked_processes"), "{{instance}}")], "none"), w=8)
    b.add(timeseries("Processes starting to be watched per second", "By how: scan (found in "
                     "/proc), exec (a new binary, inspected), kernel_exec (a known binary, tracked "
                     "by the kernel before its first instruction).",
                     [target(f"sum by (instance, how) (rate({host('golens_agent_processes_tracked_total')}[{RATE}]))",
                             "{{how}} @ {{instance}}")], "ops"), w=8)
    b.add(timeseries("Skipped Go processes (since the agent started)", "Go processes not watched, "
                     "each counted once: max_processes (raise --max-processes), kernel_map_error.",
                     [target(f"sum by (instance, reason) ({host('golens_agent_skipped_processes_total')})",
                             "{{reason}} @ {{instance}}")], "none", steps=((1, "red"),)), w=12)
    b.add(timeseries("Discovery errors (since the agent started)", "Executables the agent could "
                     "not read: permission_denied needs CAP_SYS_PTRACE.",
                     [target(f"sum by (instance, reason) ({host('golens_agent_discovery_errors_total')})",
                             "{{reason}} @ {{instance}}")], "none"), w=12)

    b.row("Kernel side")
    b.add(timeseries("eBPF programs not attached", "Per agent, programs whose attach failed "
                     "(e.g. epoll_pwait2 on kernels before 5.11). Families turned off with "
                     "--probes have no series.",
                     [target(count_or_zero(host("golens_agent_program_attached"), "instance"),
                             "{{instance}}")], "none", steps=((1, "red"),)), w=8)
    b.add(timeseries("Runtime probes not attached, by probe", "Processes whose runtime probe is "
                     "not attached; `golens list --agent URL` says why.",
                     [target(count_or_zero(process("golens_probe_attached"), "instance, probe"),
                             "{{probe}} @ {{instance}}")], "none", steps=((1, "red"),)), w=8)
    b.add(timeseries("Kernel drops per second by reason", "runqueue_start_storage_failed, "
                     "proc_event_ring_full, sched_stats_missing, exec_tracking_map_full.",
                     [target(f"sum by (instance, reason) (rate({host('golens_agent_kernel_drops_total')}[{RATE}]))",
                             "{{reason}} @ {{instance}}")], "ops", steps=((0.0001, "red"),)), w=8)
    b.add(timeseries("Uprobe links and probed binaries", "Runtime uprobes are attached per "
                     "executable: links grow with binaries, not processes.",
                     [target(host("golens_agent_uprobe_links"), "links {{instance}}"),
                      target(host("golens_agent_probed_binaries"), "binaries {{instance}}")],
                     "none"), w=8)
    b.add(table("Attach mode", "uprobe_multi (kernel 6.6+: one link per binary) or perf_event.",
                host("golens_agent_attach_mode"), hide=("Value",)), w=8)
    b.add(table("eBPF programs", "Every program of every agent, not attached first.",
                host("golens_agent_program_attached"), sort_desc=False,
                mappings=ATTACHED_MAPPINGS), w=8)

    b.row("Cost")
    b.add(timeseries("Collection duration", "Time the agent's last collection (every kernel map "
                     "and /proc file) took.",
                     [target(host("golens_agent_collection_duration_seconds"), "{{instance}}")],
                     "s"), w=8)
    b.add(timeseries("Scrape duration", "How long Prometheus took to scrape each agent.",
                     [target(host("scrape_duration_seconds"), "{{instance}}")], "s"), w=8)
    b.add(timeseries("Samples per scrape and up", "Samples each scrape returned (about 150 per "
                     "watched process), and whether the scrape succeeded.",
                     [target(host("scrape_samples_scraped"), "samples {{instance}}"),
                      target(host("up"), "up {{instance}}")], "none"), w=8)
    return b


DASHBOARDS = [fleet_overview, gc_and_stw, scheduler_and_cpu, pressure, agent_health]

# ---------------------------------------------------------------------------------------------
# Rules: recording rules keep every label of a process (`without`, never `by`), alerts are
# written on the raw metrics (so they work without the recording group).

WINDOW = "5m"
STW_P99 = f"histogram_quantile(0.99, sum without (reason) (rate(golens_go_stw_pause_seconds_bucket[{WINDOW}])))"
RUNQUEUE_P99 = f"histogram_quantile(0.99, rate(golens_sched_runqueue_latency_seconds_bucket[{WINDOW}]))"
GC_RATE = f"rate(golens_go_gc_cycles_total[{WINDOW}])"
GC_RUNNING = f"rate(golens_go_gc_cycle_duration_seconds_sum[{WINDOW}])"
FD_RATIO = "golens_process_open_fds / golens_process_max_fds"
VMA_RATIO = vma_ratio("golens_process_vmas_peak", "golens_process_vmas", "golens_host_vmas_max")
THROTTLED = f"rate(golens_cgroup_cpu_throttled_seconds_total[{WINDOW}])"
GOMAXPROCS_RATIO = gomaxprocs_per_quota_core("golens_go_gomaxprocs", "golens_cgroup_cpu_quota_cores")
PORT_RATIO = "golens_host_ephemeral_ports_used / golens_host_ephemeral_port_range_size"
CONNTRACK_RATIO = "golens_host_conntrack_entries / golens_host_conntrack_max"
FILES_RATIO = "golens_host_open_files / golens_host_max_files"

RECORDING = [
    ("process:golens_go_stw_pause_seconds:p99_rate5m", STW_P99),
    ("process:golens_sched_runqueue_latency_seconds:p99_rate5m", RUNQUEUE_P99),
    ("process:golens_go_gc_cycles:rate5m", GC_RATE),
    ("process:golens_go_gc_cycle_running:ratio_rate5m", GC_RUNNING),
    ("process:golens_process_fds:ratio", FD_RATIO),
    ("process:golens_process_vmas:ratio", VMA_RATIO),
    ("process:golens_cgroup_cpu_throttled_seconds:rate5m", THROTTLED),
    ("process:golens_go_gomaxprocs:per_quota_core", GOMAXPROCS_RATIO),
    ("instance:golens_host_ephemeral_ports:ratio", PORT_RATIO),
    ("instance:golens_host_conntrack:ratio", CONNTRACK_RATIO),
    ("instance:golens_host_files:ratio", FILES_RATIO),
]

WHO = "{{ $labels.comm }} (pid {{ $labels.pid }}) on {{ $labels.instance }}"

# (name, expr, for, severity, summary, description)
ALERTS = [
    (
        "GolensGoStwPauseP99High",
        f"{STW_P99} > 0.01",
        "10m",
        "warning",
        WHO + ": p99 stop-the-world pause {{ $value | humanizeDuration }}",
        "The 99th percentile of this Go process's stop-the-world pauses has been above 10 ms "
        "for 10 minutes; every goroutine, so every request in flight, waits that long. Open the "
        "\"golens / GC and stop-the-world\" dashboard: the reason label says who stops the world "
        "(gc_mark_termination and gc_sweep_termination are the GC; read_mem_stats, "
        "goroutine_profile, gomaxprocs are the program or its profiler), and a long time to stop "
        "means a goroutine in a loop without preemption points. Fewer GC cycles (a higher GOGC "
        "or GOMEMLIMIT, fewer allocations), fewer ReadMemStats calls and enough CPU (no "
        "throttling) shorten them.",
    ),
    (
        "GolensGoGcThrashing",
        f"{GC_RUNNING} > 0.8 and {GC_RATE} > 1",
        "15m",
        "warning",
        WHO + ": a GC cycle is running {{ $value | humanizePercentage }} of the time",
        "For 15 minutes this Go process has started a new GC cycle almost as soon as the last "
        "one ended, more than once a second: the heap stays at its goal, typically because "
        "GOMEMLIMIT (or the container's memory limit) is barely above the live heap, or GOGC is "
        "too low for the allocation rate. GC then takes a large share of the CPU and latency "
        "suffers. Compare the live heap with GOMEMLIMIT, raise the limit (or GOGC), or cut "
        "allocations (go tool pprof -sample_index=alloc_space).",
    ),
    (
        "GolensRunqueueLatencyP99High",
        f"{RUNQUEUE_P99} > 0.05",
        "15m",
        "warning",
        WHO + ": p99 run-queue latency {{ $value | humanizeDuration }}",
        "For 15 minutes the process's threads waited more than 50 ms for a CPU at the 99th "
        "percentile: the node (or the process's cpuset) is oversubscribed. Check the node's CPU "
        "use and its noisy neighbours, CPU throttling of the process's cgroup, and GOMAXPROCS "
        "against the CPUs it really has (\"golens / Scheduler and CPU\").",
    ),
    (
        "GolensProcessFdsNearLimit",
        f"{FD_RATIO} > 0.9",
        "5m",
        "warning",
        WHO + ": {{ $value | humanizePercentage }} of RLIMIT_NOFILE in use",
        "The process has more than 90 % of its soft RLIMIT_NOFILE open: at 100 % open(), "
        "socket() and accept() fail with EMFILE and the service drops connections. Look for a "
        "leak (ls -l /proc/PID/fd; connections or files never closed, response bodies not "
        "closed), or raise the limit: LimitNOFILE= in its systemd unit, the container runtime's "
        "default ulimits, or `ulimit -n` in its start script (Go 1.19+ raises its soft limit to "
        "the hard one by itself).",
    ),
    (
        "GolensProcessFdExhausted",
        f"increase(golens_process_fd_exhaustion_total[{WINDOW}]) > 0",
        "0m",
        "critical",
        WHO + ": fd-creating system calls fail with {{ $labels.errno }}",
        "The process could not open a file, socket or pipe in the last 5 minutes: EMFILE means "
        "it reached its RLIMIT_NOFILE, ENFILE that the whole node reached fs.file-max. "
        "Connections are being refused or dropped now. For EMFILE find the leak (ls -l "
        "/proc/PID/fd) or raise LimitNOFILE / the container's nofile ulimit; for ENFILE raise "
        "fs.file-max (sysctl -w fs.file-max=N, persisted in /etc/sysctl.d) and find the process "
        "that holds the handles.",
    ),
    (
        "GolensProcessVmasNearLimit",
        f"{VMA_RATIO} > 0.9",
        "5m",
        "critical",
        WHO + ": {{ $value | humanizePercentage }} of vm.max_map_count memory mappings",
        "The process has more than 90 % of vm.max_map_count memory mappings: at the limit mmap "
        "fails with ENOMEM and the Go runtime dies with \"fatal error: runtime: cannot allocate "
        "memory\" (or \"out of memory\") although memory is free. Raise the limit (sysctl -w "
        "vm.max_map_count=262144, persisted in /etc/sysctl.d), and find what maps so much "
        "(wc -l /proc/PID/maps: cgo libraries, mmap'd files, a huge heap).",
    ),
    (
        "GolensHostEphemeralPortsNearExhaustion",
        f"{PORT_RATIO} > 0.9",
        "5m",
        "warning",
        "{{ $labels.instance }}: {{ $value | humanizePercentage }} of the ephemeral port range in use",
        "More than 90 % of net.ipv4.ip_local_port_range is held by sockets on this node: new "
        "outgoing connections will fail with EADDRNOTAVAIL. Reuse connections (HTTP keep-alive: "
        "read and close response bodies, a shared http.Client with enough MaxIdleConnsPerHost), "
        "widen the range (sysctl -w net.ipv4.ip_local_port_range=\"1024 65000\"), and enable "
        "net.ipv4.tcp_tw_reuse=1 if TIME_WAIT sockets hold most of them.",
    ),
    (
        "GolensProcessConnectEaddrnotavail",
        f"increase(golens_process_connect_eaddrnotavail_total[{WINDOW}]) > 0",
        "0m",
        "critical",
        WHO + ": connect() failed with EADDRNOTAVAIL (no ephemeral port left)",
        "Outgoing connections of this process failed in the last 5 minutes because no "
        "ephemeral port was free: its requests to other services are failing now. Reuse "
        "connections (keep-alive, close response bodies, one shared http.Client), widen "
        "net.ipv4.ip_local_port_range, and enable net.ipv4.tcp_tw_reuse=1 when TIME_WAIT "
        "sockets hold the ports.",
    ),
    (
        "GolensHostConntrackNearLimit",
        f"{CONNTRACK_RATIO} > 0.9",
        "5m",
        "critical",
        "{{ $labels.instance }}: conntrack table {{ $value | humanizePercentage }} full",
        "More than 90 % of nf_conntrack_max entries are in use: when the table is full the "
        "kernel drops packets of new connections (\"nf_conntrack: table full, dropping "
        "packet\" in dmesg), which looks like random timeouts. Raise net.netfilter."
        "nf_conntrack_max (and nf_conntrack_buckets), shorten timeouts such as "
        "nf_conntrack_tcp_timeout_time_wait, or find who opens so many connections.",
    ),
    (
        "GolensCgroupCpuThrottled",
        f"{THROTTLED} > 0.1",
        "15m",
        "warning",
        WHO + ": CPU throttled {{ $value | humanizePercentage }} of the time",
        "The process's cgroup has been throttled by its CPU quota for more than 10 % of the "
        "time for 15 minutes: its goroutines, GC workers included, stop until the next quota "
        "period, which shows as latency spikes and long pauses. Raise the CPU limit, or lower "
        "GOMAXPROCS to the quota (Go 1.25+ does this by itself) so the GC does not burn the "
        "quota in parallel bursts.",
    ),
    (
        "GolensGomaxprocsAboveCpuQuota",
        "max without (source) (golens_go_gomaxprocs) > clamp_min(ceil(golens_cgroup_cpu_quota_cores), 2)",
        "15m",
        "warning",
        WHO + ": GOMAXPROCS {{ $value }} above its CPU quota",
        "GOMAXPROCS is above the cgroup's CPU quota rounded up (and above 2): the Go scheduler "
        "runs more threads than the quota pays for, and the quota throttles them, often in the "
        "middle of a GC. Start the process with GOMAXPROCS set to its quota rounded up, build it "
        "with Go 1.25+ (whose default follows the quota), or use go.uber.org/automaxprocs. "
        "`golens doctor` on the node names the process and the quota file.",
    ),
    (
        "GolensHostCheckFailing",
        "golens_host_check_status == 2",
        "15m",
        "warning",
        "{{ $labels.instance }}: host check {{ $labels.check }} fails",
        "golens doctor's check has failed on this node for 15 minutes: a kernel, ulimit or "
        "cgroup setting that hurts Go services. Run `golens doctor` on the node (or `golens "
        "doctor --format json`): it prints the measured value, why it matters and the command "
        "that fixes it.",
    ),
    (
        "GolensAgentDegraded",
        "golens_agent_ebpf_available == 0",
        "5m",
        "warning",
        "{{ $labels.instance }}: golens runs without eBPF",
        "The golens agent on this node could not load its eBPF programs and serves only what "
        "/proc gives: no GC, stop-the-world, run-queue or syscall metrics. Its log says why in "
        "one line: no BTF (/sys/kernel/btf/vmlinux; pass --btf FILE), a missing capability "
        "(CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_SYS_RESOURCE before 5.11), or a seccomp "
        "profile that blocks bpf(). Fix the DaemonSet's securityContext, or the kernel.",
    ),
    (
        "GolensAgentKernelDrops",
        f"rate(golens_agent_kernel_drops_total[{WINDOW}]) > 0",
        "15m",
        "warning",
        "{{ $labels.instance }}: golens' kernel side drops work ({{ $labels.reason }})",
        "For 15 minutes the agent's eBPF programs have dropped work because a map or ring "
        "buffer was full, so some numbers undercount. proc_event_ring_full: more execs and "
        "exits than the agent drains (it rescans /proc, so tracking recovers); "
        "exec_tracking_map_full or sched_stats_missing: more processes than the maps hold, "
        "lower --max-processes or watch fewer (--comm); runqueue_start_storage_failed: the "
        "kernel could not allocate task storage. Check the agent's log and CPU.",
    ),
    (
        "GolensRuntimeProbeNotAttached",
        "golens_probe_attached == 0",
        "10m",
        "warning",
        WHO + ": runtime probe {{ $labels.probe }} not attached",
        "golens could not attach this Go runtime probe to the process's binary, so the metrics "
        "that need it (GC cycles, pauses, sysmon preemptions) are not exported for it rather "
        "than reading 0. `golens list --pid PID` (or `golens list --agent URL`) says why: a Go "
        "version older than 1.17, a symbol not found in .gopclntab, or an attach error in the "
        "agent's log.",
    ),
    (
        "GolensProgramNotAttached",
        "golens_agent_program_attached == 0 and on (job, instance) golens_agent_ebpf_available == 1",
        "10m",
        "info",
        "{{ $labels.instance }}: eBPF program {{ $labels.program }} not attached",
        "One of the agent's eBPF programs failed to attach although eBPF works, so its metrics "
        "are missing on this node. Expected on old kernels for syscalls they lack (epoll_pwait2 "
        "before 5.11); otherwise the agent's log names the error. Turn the family off with "
        "--probes if it cannot work here.",
    ),
]

# ---------------------------------------------------------------------------------------------
# Rule unit tests (promtool test rules): each alert fires on synthetic series that should
# make it fire, and stays quiet on ones that should not.

TARGET = {"job": "golens", "instance": "node-a:9477"}
API = {**TARGET, "pid": "4242", "comm": "api"}

# Bucket bounds as golens exports them: powers of two of nanoseconds, in seconds.
def bucket(power):
    return f"{2 ** power / 1e9:.12g}"


def labels_text(name, labels):
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def series(name, labels, values):
    return {"series": labels_text(name, labels), "values": values}


def histogram(name, labels, per_minute, steps=40):
    """A histogram whose observations per minute fall into the given buckets.

    per_minute: {power of two of ns: observations per minute}; every other bucket gets none.
    Returns the _bucket (cumulative), _sum and _count series over `steps` minutes.
    """
    powers = sorted(set(per_minute) | {min(per_minute) - 1})
    out, cumulative, total_seconds = [], 0, 0.0
    for power in powers:
        cumulative += per_minute.get(power, 0)
        out.append(series(name + "_bucket", {**labels, "le": bucket(power)}, f"0+{cumulative}x{steps}"))
        total_seconds += per_minute.get(power, 0) * 2 ** power / 1e9 * 0.75
    out.append(series(name + "_bucket", {**labels, "le": "+Inf"}, f"0+{cumulative}x{steps}"))
    out.append(series(name + "_count", labels, f"0+{cumulative}x{steps}"))
    out.append(series(name + "_sum", labels, f"0+{total_seconds:.9g}x{steps}"))
    return out


def alert_test(name, alert, input_series, fires, *, at="30m"):
    """fires: [(labels, summary)] the alert must fire with at `at`; [] when it must not."""
    rule = next(a for a in ALERTS if a[0] == alert)
    expected = [
        {
            "exp_labels": {**labels, "severity": rule[3]},
            "exp_annotations": {"summary": summary, "description": rule[5]},
        }
        for labels, summary in fires
    ]
    return {
        "name": name,
        "interval": "1m",
        "input_series": input_series,
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
    }


def who(labels):
    return f"{labels['comm']} (pid {labels['pid']}) on {labels['instance']}"


def rule_tests():
    quiet = {**TARGET, "pid": "4343", "comm": "quiet"}
    tests = []

    # Stop-the-world p99: 100 pauses a minute of up to 16.8 ms (2^24 ns) vs up to 131 µs.
    tests.append(alert_test(
        "STW p99 above 10 ms fires; a process with 100 µs pauses does not",
        "GolensGoStwPauseP99High",
        histogram("golens_go_stw_pause_seconds", {**API, "reason": "gc_mark_termination"}, {24: 100})
        + histogram("golens_go_stw_pause_seconds", {**quiet, "reason": "gc_mark_termination"}, {17: 100}),
        [(API, who(API) + ": p99 stop-the-world pause 16.69ms")],
    ))
    tests.append(alert_test(
        "STW p99 above 10 ms for less than 10 minutes does not fire",
        "GolensGoStwPauseP99High",
        [series("golens_go_stw_pause_seconds_bucket", {**API, "reason": "gc_mark_termination", "le": bucket(23)}, "0+100x25 2500+0x14"),
         series("golens_go_stw_pause_seconds_bucket", {**API, "reason": "gc_mark_termination", "le": bucket(24)}, "0+100x25 2500+100x14"),
         series("golens_go_stw_pause_seconds_bucket", {**API, "reason": "gc_mark_termination", "le": "+Inf"}, "0+100x25 2500+100x14")],
        [],
    ))

    # GC thrashing: a cycle running 90 % of the time, 5 cycles a second.
    tests.append(alert_test(
        "GC running 90 % of the time at 5 cycles/s fires; 10 % does not",
        "GolensGoGcThrashing",
        [series("golens_go_gc_cycle_duration_seconds_sum", API, "0+54x40"),
         series("golens_go_gc_cycles_total", API, "0+300x40"),
         series("golens_go_gc_cycle_duration_seconds_sum", quiet, "0+6x40"),
         series("golens_go_gc_cycles_total", quiet, "0+300x40")],
        [(API, who(API) + ": a GC cycle is running 90% of the time")],
    ))
    tests.append(alert_test(
        "one long GC cycle a minute is no thrashing",
        "GolensGoGcThrashing",
        [series("golens_go_gc_cycle_duration_seconds_sum", API, "0+54x40"),
         series("golens_go_gc_cycles_total", API, "0+1x40")],
        [],
    ))

    # Run-queue latency: waits of up to 134 ms (2^27 ns) vs up to 1 ms.
    tests.append(alert_test(
        "run-queue p99 above 50 ms fires; 1 ms does not",
        "GolensRunqueueLatencyP99High",
        histogram("golens_sched_runqueue_latency_seconds", API, {27: 1000})
        + histogram("golens_sched_runqueue_latency_seconds", quiet, {20: 1000}),
        [(API, who(API) + ": p99 run-queue latency 133.5ms")],
    ))
    tests.append(alert_test(
        "run-queue p99 above 50 ms for 10 minutes does not fire",
        "GolensRunqueueLatencyP99High",
        [series("golens_sched_runqueue_latency_seconds_bucket", {**API, "le": bucket(20)}, "0+1000x20 20000+0x20"),
         series("golens_sched_runqueue_latency_seconds_bucket", {**API, "le": bucket(27)}, "0+1000x20 20000+1000x20"),
         series("golens_sched_runqueue_latency_seconds_bucket", {**API, "le": "+Inf"}, "0+1000x20 20000+1000x20")],
        [],
    ))

    # File descriptors: 950 of 1000 vs 100 of 1000.
    tests.append(alert_test(
        "95 % of RLIMIT_NOFILE fires; 10 % does not",
        "GolensProcessFdsNearLimit",
        [series("golens_process_open_fds", API, "950x40"),
         series("golens_process_max_fds", API, "1000x40"),
         series("golens_process_open_fds", quiet, "100x40"),
         series("golens_process_max_fds", quiet, "1000x40")],
        [(API, who(API) + ": 95% of RLIMIT_NOFILE in use")],
    ))
    tests.append(alert_test(
        "95 % of RLIMIT_NOFILE for 3 minutes does not fire",
        "GolensProcessFdsNearLimit",
        [series("golens_process_open_fds", API, "100x26 950x3 100x10"),
         series("golens_process_max_fds", API, "1000x40")],
        [],
    ))
    tests.append(alert_test(
        "an EMFILE fires; a flat counter does not",
        "GolensProcessFdExhausted",
        [series("golens_process_fd_exhaustion_total", {**API, "errno": "EMFILE"}, "0x28 3 3"),
         series("golens_process_fd_exhaustion_total", {**API, "errno": "ENFILE"}, "0x30"),
         series("golens_process_fd_exhaustion_total", {**quiet, "errno": "EMFILE"}, "7x30")],
        [({**API, "errno": "EMFILE"}, who(API) + ": fd-creating system calls fail with EMFILE")],
    ))
    tests.append(alert_test(
        "an EMFILE more than 5 minutes ago no longer fires",
        "GolensProcessFdExhausted",
        [series("golens_process_fd_exhaustion_total", {**API, "errno": "EMFILE"}, "0x10 5x30")],
        [],
    ))

    # VMAs: the peak where the vma family runs, else the count now.
    host_limits = [series("golens_host_vmas_max", TARGET, "65530x40")]
    tests.append(alert_test(
        "VMAs: a peak at 95 % fires, and /proc's count stands in without the vma family",
        "GolensProcessVmasNearLimit",
        host_limits
        + [series("golens_process_vmas_peak", API, "62254x40"),
           series("golens_process_vmas", API, "1000x40"),
           series("golens_process_vmas", {**API, "pid": "4244"}, "62254x40"),
           series("golens_process_vmas_peak", quiet, "6553x40"),
           series("golens_process_vmas", quiet, "62254x40")],
        [(API, who(API) + ": 95% of vm.max_map_count memory mappings"),
         ({**API, "pid": "4244"}, who({**API, "pid": "4244"}) + ": 95% of vm.max_map_count memory mappings")],
    ))
    tests.append(alert_test(
        "VMAs at 50 % do not fire",
        "GolensProcessVmasNearLimit",
        host_limits + [series("golens_process_vmas", API, "32765x40")],
        [],
    ))

    # Ephemeral ports.
    tests.append(alert_test(
        "95 % of the ephemeral range fires",
        "GolensHostEphemeralPortsNearExhaustion",
        [series("golens_host_ephemeral_ports_used", TARGET, "950x40"),
         series("golens_host_ephemeral_port_range_size", TARGET, "1000x40"),
         series("golens_host_ephemeral_ports_used", {**TARGET, "instance": "node-b:9477"}, "100x40"),
         series("golens_host_ephemeral_port_range_size", {**TARGET, "instance": "node-b:9477"}, "1000x40")],
        [(TARGET, "node-a:9477: 95% of the ephemeral port range in use")],
    ))
    tests.append(alert_test(
        "30 % of the ephemeral range does not fire",
        "GolensHostEphemeralPortsNearExhaustion",
        [series("golens_host_ephemeral_ports_used", TARGET, "8470x40"),
         series("golens_host_ephemeral_port_range_size", TARGET, "28232x40")],
        [],
    ))
    tests.append(alert_test(
        "an EADDRNOTAVAIL fires; a flat counter does not",
        "GolensProcessConnectEaddrnotavail",
        [series("golens_process_connect_eaddrnotavail_total", API, "0x27 1 2 2"),
         series("golens_process_connect_eaddrnotavail_total", quiet, "4x30")],
        [(API, who(API) + ": connect() failed with EADDRNOTAVAIL (no ephemeral port left)")],
    ))
    tests.append(alert_test(
        "no EADDRNOTAVAIL, no alert",
        "GolensProcessConnectEaddrnotavail",
        [series("golens_process_connect_eaddrnotavail_total", API, "0x30")],
        [],
    ))

    # Conntrack.
    tests.append(alert_test(
        "conntrack at 95 % fires",
        "GolensHostConntrackNearLimit",
        [series("golens_host_conntrack_entries", TARGET, "249037x40"),
         series("golens_host_conntrack_max", TARGET, "262144x40")],
        [(TARGET, "node-a:9477: conntrack table 95% full")],
    ))
    tests.append(alert_test(
        "conntrack at 10 % does not fire, nor does a node without conntrack",
        "GolensHostConntrackNearLimit",
        [series("golens_host_conntrack_entries", TARGET, "26214x40"),
         series("golens_host_conntrack_max", TARGET, "262144x40"),
         series("golens_host_ephemeral_port_range_size", {**TARGET, "instance": "node-b:9477"}, "1000x40")],
        [],
    ))

    # CPU throttling: 30 s per minute vs 1 s per minute.
    tests.append(alert_test(
        "throttled half the time fires; 2 % does not",
        "GolensCgroupCpuThrottled",
        [series("golens_cgroup_cpu_throttled_seconds_total", API, "0+30x40"),
         series("golens_cgroup_cpu_throttled_seconds_total", quiet, "0+1x40")],
        [(API, who(API) + ": CPU throttled 50% of the time")],
    ))
    tests.append(alert_test(
        "no quota, no throttling, no alert",
        "GolensCgroupCpuThrottled",
        [series("golens_cgroup_cpu_throttled_seconds_total", API, "0x40")],
        [],
    ))

    # GOMAXPROCS vs quota: 8 Ps on a 2-core quota; 2 Ps on a 1-core quota is within max(2, 1).
    small = {**TARGET, "pid": "4545", "comm": "small"}
    tests.append(alert_test(
        "GOMAXPROCS 8 on a 2-core quota fires; 2 on 1 core, and 4 on 3.5 cores, do not",
        "GolensGomaxprocsAboveCpuQuota",
        [series("golens_go_gomaxprocs", {**API, "source": "env"}, "8x40"),
         series("golens_cgroup_cpu_quota_cores", API, "2x40"),
         series("golens_go_gomaxprocs", {**small, "source": "go_default_cpus"}, "2x40"),
         series("golens_cgroup_cpu_quota_cores", small, "1x40"),
         series("golens_go_gomaxprocs", {**quiet, "source": "go_default_cgroup"}, "4x40"),
         series("golens_cgroup_cpu_quota_cores", quiet, "3.5x40")],
        [(API, who(API) + ": GOMAXPROCS 8 above its CPU quota")],
    ))
    tests.append(alert_test(
        "GOMAXPROCS without a quota does not fire",
        "GolensGomaxprocsAboveCpuQuota",
        [series("golens_go_gomaxprocs", {**API, "source": "env"}, "64x40")],
        [],
    ))

    # Host checks.
    tests.append(alert_test(
        "a failing check fires; a warning one does not",
        "GolensHostCheckFailing",
        [series("golens_host_check_status", {**TARGET, "check": "vm_max_map_count"}, "2x40"),
         series("golens_host_check_status", {**TARGET, "check": "ntp_sync"}, "1x40"),
         series("golens_host_check_status", {**TARGET, "check": "clocksource"}, "0x40")],
        [({**TARGET, "check": "vm_max_map_count"}, "node-a:9477: host check vm_max_map_count fails")],
    ))
    tests.append(alert_test(
        "a check that failed for 10 minutes, then passed, does not fire",
        "GolensHostCheckFailing",
        [series("golens_host_check_status", {**TARGET, "check": "vm_max_map_count"}, "0x10 2x10 0x20")],
        [],
    ))

    # The agent itself.
    tests.append(alert_test(
        "a degraded agent fires; a healthy one does not",
        "GolensAgentDegraded",
        [series("golens_agent_ebpf_available", TARGET, "0x40"),
         series("golens_agent_ebpf_available", {**TARGET, "instance": "node-b:9477"}, "1x40")],
        [(TARGET, "node-a:9477: golens runs without eBPF")],
    ))
    tests.append(alert_test(
        "an agent degraded for 2 minutes (a restart) does not fire",
        "GolensAgentDegraded",
        [series("golens_agent_ebpf_available", TARGET, "1x27 0 0 1x10")],
        [],
    ))
    drops = {**TARGET, "reason": "proc_event_ring_full"}
    tests.append(alert_test(
        "steady kernel drops fire; a flat counter does not",
        "GolensAgentKernelDrops",
        [series("golens_agent_kernel_drops_total", drops, "0+10x40"),
         series("golens_agent_kernel_drops_total", {**TARGET, "reason": "sched_stats_missing"}, "3x40")],
        [(drops, "node-a:9477: golens' kernel side drops work (proc_event_ring_full)")],
    ))
    tests.append(alert_test(
        "one burst of drops does not fire",
        "GolensAgentKernelDrops",
        [series("golens_agent_kernel_drops_total", drops, "0x20 50x20")],
        [],
    ))
    probe = {**API, "probe": "stw_stop"}
    tests.append(alert_test(
        "a runtime probe not attached fires; attached ones do not",
        "GolensRuntimeProbeNotAttached",
        [series("golens_probe_attached", probe, "0x40"),
         series("golens_probe_attached", {**API, "probe": "gc_cycle_start"}, "1x40")],
        [(probe, who(API) + ": runtime probe stw_stop not attached")],
    ))
    tests.append(alert_test(
        "every runtime probe attached, no alert",
        "GolensRuntimeProbeNotAttached",
        [series("golens_probe_attached", {**API, "probe": p}, "1x40")
         for p in ("gc_cycle_start", "gc_cycle_end", "stw_stop", "stw_stopped", "stw_started", "sysmon_preempt")],
        [],
    ))
    program = {**TARGET, "program": "golens_epp2_in"}
    tests.append(alert_test(
        "a program not attached fires where eBPF works",
        "GolensProgramNotAttached",
        [series("golens_agent_program_attached", program, "0x40"),
         series("golens_agent_program_attached", {**TARGET, "program": "golens_switch"}, "1x40"),
         series("golens_agent_ebpf_available", TARGET, "1x40")],
        [(program, "node-a:9477: eBPF program golens_epp2_in not attached")],
    ))
    tests.append(alert_test(
        "programs of a degraded agent are left to GolensAgentDegraded",
        "GolensProgramNotAttached",
        [series("golens_agent_program_attached", program, "0x40"),
         series("golens_agent_ebpf_available", TARGET, "0x40")],
        [],
    ))

    # Recording rules keep a process's labels.
    tests.append({
        "name": "recording rules keep every label of the process",
        "interval": "1m",
        "input_series": [
            series("golens_process_open_fds", {**API, "container_id": "c0ffee"}, "250x10"),
            series("golens_process_max_fds", {**API, "container_id": "c0ffee"}, "1000x10"),
            series("golens_process_vmas", API, "6553x10"),
            series("golens_host_vmas_max", TARGET, "65530x10"),
        ],
        "promql_expr_test": [
            {"expr": "process:golens_process_fds:ratio", "eval_time": "5m",
             "exp_samples": [{"labels": labels_text("process:golens_process_fds:ratio", {**API, "container_id": "c0ffee"}), "value": 0.25}]},
            {"expr": "process:golens_process_vmas:ratio", "eval_time": "5m",
             "exp_samples": [{"labels": labels_text("process:golens_process_vmas:ratio", API), "value": 0.1}]},
        ],
    })
    return tests


# ---------------------------------------------------------------------------------------------
# YAML: a small emitter for the shapes above (block mappings and sequences; strings plain when
# unambiguous, as literal blocks when they are PromQL, otherwise JSON-quoted, which YAML reads).

PLAIN_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:/+-")


def yaml_scalar(value, key):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if key == "expr":
        return None  # a literal block
    if value and set(value) <= PLAIN_SAFE and value[0].isalpha() and not _looks_typed(value):
        return value
    if re.fullmatch(r"[0-9]+[smhdwy]", value):  # a duration; never a number in YAML
        return value
    if '"' in value and "'" not in value and value.isprintable():
        return "'" + value + "'"
    return json.dumps(value, ensure_ascii=False)


def _looks_typed(value):
    if value.lower() in ("true", "false", "yes", "no", "on", "off", "null", "~"):
        return True
    try:
        float(value)
        return True
    except ValueError:
        return False


def yaml_lines(value, indent=0, key=None):
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines += yaml_lines(v, indent + 2, k)
            elif isinstance(v, (dict, list)):
                lines.append(f"{pad}{k}: {'{}' if isinstance(v, dict) else '[]'}")
            else:
                scalar = yaml_scalar(v, k)
                if scalar is None:
                    lines.append(f"{pad}{k}: |-")
                    lines += [f"{pad}  {line}" for line in v.splitlines()]
                else:
                    lines.append(f"{pad}{k}: {scalar}")
    elif isinstance(value, list):
        for item in value:
            sub = yaml_lines(item, indent + 2, key)
            lines.append(pad + "- " + sub[0][indent + 2:])
            lines += sub[1:]
    else:
        lines.append(pad + yaml_scalar(value, key))
    return lines


HEADER = (
    "# Generated by dashboards/generate.py: edit that file and run it, not this one.\n"
)


def rules_document():
    recording = [{"record": name, "expr": expr} for name, expr in RECORDING]
    alerts = [
        {
            "alert": name,
            "expr": expr,
            "for": duration,
            "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description},
        }
        for name, expr, duration, severity, summary, description in ALERTS
    ]
    for alert in alerts:
        if alert["for"] == "0m":
            del alert["for"]
    return {
        "groups": [
            {"name": "golens-recording", "rules": recording},
            {"name": "golens-alerts", "rules": alerts},
        ]
    }


def rules_test_document():
    return {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": rule_tests()}


def outputs():
    files = {}
    for make in DASHBOARDS:
        board = make()
        files[board.file] = json.dumps(board.json(), indent=2, ensure_ascii=False) + "\n"
    files["rules.yml"] = HEADER + "\n".join(yaml_lines(rules_document())) + "\n"
    files["rules_test.yml"] = HEADER + "\n".join(yaml_lines(rules_test_document())) + "\n"
    return files


def main(argv):
    check = argv[1:] == ["--check"]
    if argv[1:] and not check:
        print(__doc__, file=sys.stderr)
        return 2
    stale = []
    for name, text in outputs().items():
        path = HERE / name
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(
            f"stale in dashboards/: {', '.join(stale)}: run `python3 dashboards/generate.py`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
