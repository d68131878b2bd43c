//! A test hook for crash tests: with `DAPO_FAILPOINT=<name>` (or `<name>@<n>`: on its n-th
//! arrival) in the environment, the process aborts (no destructors, no flushing: as `kill -9`
//! would leave it) when it reaches the point called `<name>`. Tests use it to crash at chosen
//! instants of a checkpoint write or a log write and check that nothing completed is lost.
//! Without the variable it does nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the point to crash at.
pub const ENV: &str = "DAPO_FAILPOINT";

/// Aborts here when `DAPO_FAILPOINT` names `point` (and this is its n-th arrival).
pub fn hit(point: &str) {
    if armed(point) {
        eprintln!("{ENV}: aborting at `{point}`");
        std::process::abort();
    }
}

/// Whether this arrival at `point` is the one `DAPO_FAILPOINT` names; counts arrivals, so call
/// it once per arrival (for points that must do part of their work before [`hit`]).
pub fn armed(point: &str) -> bool {
    static TARGET: OnceLock<Option<(String, usize)>> = OnceLock::new();
    static ARRIVALS: AtomicUsize = AtomicUsize::new(0);
    let target = TARGET.get_or_init(|| {
        let v = std::env::var(ENV).ok()?;
        Some(match v.split_once('@') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    match target {
        Some((name, n)) if name == point => ARRIVALS.fetch_add(1, Ordering::SeqCst) + 1 == *n,
        _ => false,
    }
}
