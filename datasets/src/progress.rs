//! Progress bars shared by the long-running steps.

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar of `len` steps; hidden when `visible` is false (tests, `--quiet`)
/// and, by indicatif, whenever stderr is not a terminal.
pub fn bar(len: u64, message: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    pb
}

/// A spinner for a step of unknown length (ticking on its own thread), hidden when
/// `visible` is false.
pub fn spinner(message: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{msg:>18} {spinner} {elapsed}").expect("valid template"));
    pb.set_message(message.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}
