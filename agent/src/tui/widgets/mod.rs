//! The pieces `ui` lays out: the process table, the selected process's
//! detail, and the pause histogram inside it.

pub mod detail;
pub mod pause_histogram;
pub mod process_table;
