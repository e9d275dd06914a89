//! golens: an eBPF agent that watches running Go services from outside.
//!
//! The binary (`main.rs`) is a thin CLI over this library; the library is
//! also what the fuzz targets (`agent/fuzz/`) drive.
//!
//! Data flows one way: `discovery` (which processes are Go, via `gobinary`)
//! -> `probes` (load and attach; `goruntime` plans the uprobes) -> `tracker`
//! (kernel maps per process) -> `snapshot` -> outputs (`metrics`, `http`,
//! `list`).

pub mod attach;
pub mod cli;
pub mod collector;
pub mod degraded;
pub mod discovery;
pub mod doctor;
pub mod gobinary;
pub mod goruntime;
pub mod http;
pub mod limits;
pub mod list;
pub mod metrics;
pub mod preflight;
pub mod pressure;
pub mod probes;
pub mod run;
pub mod snapshot;
pub mod trace;
pub mod tracker;
pub mod tui;
pub mod verdict;
