//! The one binary: configuration, CLI, process wiring and the HTTP edge.
//!
//! # Layout
//! - `config`: the figment layers (defaults, `--config` files, `BANYAN_*`, flags) and
//!   validation that names the bad key.
//! - `server`: builds a process from its modules (storage, migrations, outbox relay, bus
//!   handlers, routes) and serves it with graceful shutdown.
//! - `edge`: middleware every request passes: correlation id and trace context, timeout,
//!   one log line per request, JSON errors for unknown routes and panics.
//! - `topology`: `[topology]`, which process hosts each module and which transport reaches it.
//! - `registry`: the main process's registry of instances, and the other processes' side of it
//!   (registration, heartbeat, the directory they route by).
//! - `gateway`: the main process proxies the routes of modules hosted elsewhere.
//! - `cli`: `banyan serve [--process <name>]`, `banyan seed`, `banyan dead-letters list|replay`,
//!   `banyan bench`.
//! - `bench`: `banyan bench`, what moving a module out costs: request→reply through the bus in
//!   process, over HTTP and NATS (and their bare floors), and the checkout with payments placed
//!   in process, over HTTP and over NATS in real processes.
//! - `seed`: demo data through the modules' own routes.
//! - `telemetry`: JSON logs.

mod bench;
pub mod cli;
pub mod config;
mod edge;
mod gateway;
pub mod registry;
mod seed;
pub mod server;
pub mod telemetry;
pub mod topology;

pub use server::Server;
