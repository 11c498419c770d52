//! The `slicetest` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // What the libraries report on the way (a lock being waited for, the server's request
    // log) goes to stderr; SLICETEST_LOG=debug|info|warn|error|off sets how much (default info).
    let level = std::env::var("SLICETEST_LOG").ok().and_then(|l| l.parse().ok());
    let level = level.unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    // A client command prints other crates' notes (object_store's "retry 1 of 3") only
    // from warnings on, unless SLICETEST_LOG asks for them; a server or a cluster process
    // logs them all.
    let asked = std::env::var_os("SLICETEST_LOG").is_some();
    let others = match asked || args.is_serve() || args.is_cluster_process() {
        true => level,
        false => level.min(tracing_subscriber::filter::LevelFilter::WARN),
    };
    let targets = tracing_subscriber::filter::Targets::new().with_default(others).with_target("slicetest", level);
    let log = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false);
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        if args.is_serve() {
            log.finish().with(targets).init()
        } else {
            log.without_time().finish().with(targets).init()
        }
    }
    // Ballista reports through the `log` crate: in a scheduler's or executor's log, its
    // problems (a task an executor could not decode, a lost executor) join slicetest's.
    // A client's command already prints the error it ends with, so there only when asked.
    if args.is_cluster_process() || asked {
        forward_log_records(level);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime starts");
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        // `slicetest sql … | head`: the reader left; that is not an error worth a message.
        Err(e) if e.to_string().contains("Broken pipe") => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                let text = s.to_string();
                if !e.to_string().contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// Forwards the records of the `log` crate up to `level` to `tracing`'s subscriber.
fn forward_log_records(level: tracing_subscriber::filter::LevelFilter) {
    use tracing_subscriber::filter::LevelFilter;

    struct Forward;
    impl log::Log for Forward {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            let (target, message) = (record.target(), record.args());
            match record.level() {
                log::Level::Error => tracing::error!("{target}: {message}"),
                log::Level::Warn => tracing::warn!("{target}: {message}"),
                log::Level::Info => tracing::info!("{target}: {message}"),
                log::Level::Debug => tracing::debug!("{target}: {message}"),
                log::Level::Trace => tracing::trace!("{target}: {message}"),
            }
        }
        fn flush(&self) {}
    }
    static FORWARD: Forward = Forward;
    let max = match level {
        l if l == LevelFilter::OFF => log::LevelFilter::Off,
        l if l == LevelFilter::ERROR => log::LevelFilter::Error,
        l if l == LevelFilter::WARN => log::LevelFilter::Warn,
        l if l == LevelFilter::INFO => log::LevelFilter::Info,
        l if l == LevelFilter::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    // Fails only when a logger is installed already, which nothing here does.
    if log::set_logger(&FORWARD).is_ok() {
        log::set_max_level(max);
    }
}
