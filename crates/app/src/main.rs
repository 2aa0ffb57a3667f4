//! `banyan`: the shop in one process (`cargo run`), or any part of it.

/// mimalloc instead of glibc's malloc: per-thread free lists without glibc's consolidation
/// passes, which took a fifth of a bus call's CPU under concurrency (ARCHITECTURE → Where the
/// time goes).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    banyan_app::cli::main().await
}
