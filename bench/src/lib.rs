//! Shared helpers for kiln's benchmark binaries (`src/bin/*`).

use std::time::{Duration, Instant};

/// Runs `f` `runs` times and returns the sorted durations.
pub fn time_runs(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// Median, min and max of sorted durations, in milliseconds.
pub fn summary_ms(sorted: &[Duration]) -> (f64, f64, f64) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(sorted[sorted.len() / 2]),
        ms(sorted[0]),
        ms(sorted[sorted.len() - 1]),
    )
}
