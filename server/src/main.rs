//! `switchboard`: the server binary and its small admin CLI.

mod admin;
#[cfg(target_os = "linux")]
mod alloc;
mod bridge;
mod cli;
mod serve;
mod storage;

use std::process::ExitCode;

use clap::Parser;

#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: alloc::Guarded = alloc::Guarded;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::from(1)
        }
    }
}
