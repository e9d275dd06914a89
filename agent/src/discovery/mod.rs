//! Discovery: which processes are Go, and which of those the agent watches.

pub mod cgroup;
pub mod filter;
pub mod inspect;
pub mod pidns;
pub mod procfs;

pub use filter::TargetFilter;
pub use inspect::{Inspection, Inspector};
pub use procfs::ProcessKey;
