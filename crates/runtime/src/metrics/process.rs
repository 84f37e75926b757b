//! Process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, …) from the maintained `metrics-process` collector, refreshed on every
//! `/metrics` scrape.

use std::sync::OnceLock;

use metrics_process::Collector;

fn collector() -> &'static Collector {
    static COLLECTOR: OnceLock<Collector> = OnceLock::new();
    COLLECTOR.get_or_init(Collector::default)
}

/// Gives the process metrics their `# HELP` text.
pub(super) fn describe() {
    collector().describe();
}

/// Reads the process's CPU, memory and file descriptors into the recorder; `/metrics` calls it
/// before rendering.
pub fn collect_process() {
    collector().collect();
}
