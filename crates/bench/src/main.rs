//! `banyan-bench`: what moving a module out costs (see the library's documentation).

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc instead of glibc's malloc: per-thread free lists without glibc's consolidation
/// passes, which took a fifth of a bus call's CPU under concurrency (ARCHITECTURE → Where the
/// time goes).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // The checkout part starts real processes of the app from this very binary (see the
    // crate's documentation): `banyan-bench serve ...` is `banyan serve ...`.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "serve") {
        return banyan_app::cli::main().await;
    }
    // `banyan-bench load ...`: the seed's request mix against a running shop.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "load") {
        let args = banyan_bench::load::LoadArgs::parse_from(std::env::args_os().skip(1));
        return match banyan_bench::load::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("banyan-bench load: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    // `banyan-bench readme-table FILE`: the README's table of a saved run.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "readme-table")
    {
        let Some(file) = std::env::args_os().nth(2) else {
            eprintln!("usage: banyan-bench readme-table <bench.json>");
            return ExitCode::from(2);
        };
        let table = std::fs::read_to_string(&file)
            .map_err(anyhow::Error::from)
            .and_then(|text| Ok(serde_json::from_str(&text)?))
            .and_then(|run| banyan_bench::readme::readme_table(&run));
        return match table {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("banyan-bench readme-table: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = banyan_bench::BenchArgs::parse();
    match banyan_bench::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("banyan-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
