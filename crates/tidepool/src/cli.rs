//! Pieces shared by the load-generating subcommands (`bench`, `fill`, `replay`): size
//! arguments in the contract's grammar, progress bars, and human-readable sizes.

use indicatif::{ProgressBar, ProgressStyle};

/// Parses a size argument (`64MiB`, `4096`, `1.5 GB`) for clap.
pub fn size_arg(s: &str) -> Result<u64, String> {
    tidepool_common::parse_size(s).map_err(|e| e.message().to_string())
}

/// A progress bar with a label, position and rate.
pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>20} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// `4KiB`, `32MiB`, or bytes.
pub fn human(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}
