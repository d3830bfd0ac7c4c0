//! The `ballast` binary: parse the command line, set up logging, run the chosen command.

// Every command's `println!` and `print!` (these shadow the standard ones, which panic when stdout
// fails): a closed stdout is a normal end of output. Defined before the modules, which see them.
macro_rules! println {
    () => {
        $crate::commands::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::commands::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

macro_rules! print {
    ($($arg:tt)*) => {
        $crate::commands::write_stdout(format_args!($($arg)*))
    };
}

mod chaos;
mod cli;
mod commands;
mod config_cmd;
mod diff_cmd;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The in-process gateway's per-request lines would drown a chaos run's report: errors only
    // unless a filter was asked for.
    let filter = match (&cli.command, cli.log.as_str()) {
        (cli::Command::Chaos(_), "info") => "error",
        (_, f) => f,
    };
    let logging = logging::init(filter, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(cli.command) => r,
            () = logging.report_drops() => Ok(ExitCode::SUCCESS),
        }
    });
    drop(runtime);
    let dropped = logging.dropped();
    // Flush what is queued before the last words.
    drop(logging);
    if dropped > 0 {
        eprintln!(
            "note: {dropped} log lines were dropped because the log writer could not keep up"
        );
    }
    match result.and_then(|code| commands::stdout_result().map(|()| code)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; `config apply --wait` has an exit code of its own (2: rolled back).
async fn run(command: cli::Command) -> Result<ExitCode, String> {
    match command {
        cli::Command::Config(cli::ConfigCommand::Live(c)) => {
            config_cmd::run(c).await.map(config_cmd::Exit::code)
        }
        other => commands::run(other).await.map(|()| ExitCode::SUCCESS),
    }
}
