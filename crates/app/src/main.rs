//! `banyan`: the shop in one process (`cargo run`), or any part of it.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    banyan_app::cli::main().await
}
