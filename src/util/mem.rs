//! How much memory there is, and refusing work that cannot fit before it starts: a run that
//! would outgrow the machine should say so with the settings to change, not abort halfway
//! through an allocation (or take the machine down with it).

use crate::error::{Error, Result};

/// The host's available memory (`MemAvailable` of `/proc/meminfo`), where the OS says.
pub fn host_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Errors when `need` bytes exceed `available` (unknown availability passes). `what` names
/// the work and `knobs` the settings that size it, for the message.
pub fn ensure_fits(need: u128, available: Option<u64>, what: &str, knobs: &str) -> Result<()> {
    match available {
        Some(avail) if need > u128::from(avail) => Err(Error::Invalid(format!(
            "{what} needs at least {} of memory but {} are available; lower {knobs}",
            human(need),
            human(u128::from(avail))
        ))),
        _ => Ok(()),
    }
}

/// Bytes as GiB / MiB with one decimal.
pub fn human(bytes: u128) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_what_cannot_fit() {
        assert!(ensure_fits(10, Some(100), "x", "--batch-size").is_ok());
        assert!(ensure_fits(u128::MAX, None, "x", "--batch-size").is_ok(), "unknown availability passes");
        let e = ensure_fits(3 << 30, Some(1 << 30), "one RL step", "--batch-size").unwrap_err().to_string();
        assert!(e.contains("3.0 GiB") && e.contains("1.0 GiB") && e.contains("--batch-size"), "{e}");
        if cfg!(target_os = "linux") {
            assert!(host_available().is_some_and(|b| b > 0));
        }
    }
}
