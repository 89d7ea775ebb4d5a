//! Helpers shared by the benchmark binaries.

/// The machine's CPU jiffies (busy, total) so far, from `/proc/stat`: every process,
/// the database server's included.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    // idle and iowait are the fourth and fifth values.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Measures how busy the whole machine is from [`MachineLoad::start`] to [`MachineLoad::busy_percent`].
pub struct MachineLoad((u64, u64));

impl MachineLoad {
    /// Starts measuring.
    pub fn start() -> Self {
        Self(machine_jiffies())
    }

    /// The share of all cores' time spent busy since `start`, in percent: near 100 means the
    /// run was bound by CPU, well below means it waited (disk syncs, locks, round trips).
    pub fn busy_percent(&self) -> f64 {
        let (busy, total) = machine_jiffies();
        let (b0, t0) = self.0;
        if total <= t0 {
            return 0.0;
        }
        (busy - b0) as f64 * 100.0 / (total - t0) as f64
    }
}

/// Whether this run measures `backend` (`sqlite` or `postgres`): every backend unless
/// `WEDSYNC_BENCH_BACKENDS` names some (comma-separated), so one backend can be measured
/// alone while working on it. The printed tables always say which rows ran.
pub fn measures(backend: &str) -> bool {
    match std::env::var("WEDSYNC_BENCH_BACKENDS") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|b| b.trim() == backend),
        _ => true,
    }
}
