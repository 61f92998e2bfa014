//! Peak resident memory of this process (Linux `/proc`).

/// Peak resident set size since start or the last [`reset_peak_rss`], in MiB
/// (`VmHWM`); `None` where `/proc` is unavailable.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak to the current RSS (`echo 5 > /proc/self/clear_refs`), so
/// each method's peak is measured on its own. Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
