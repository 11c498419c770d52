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
    let log = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false);
    if args.is_serve() {
        log.init()
    } else {
        log.without_time().init()
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
