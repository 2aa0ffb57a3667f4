//! The one binary: configuration, CLI, process wiring and the HTTP edge.
//!
//! # Layout
//! - `config`: the figment layers (defaults, `--config` files, `BANYAN_*`, flags) and
//!   validation that names the bad key.
//! - `secrets`: the JWT key, configured or (on loopback only) generated once into the state
//!   directory; published and short ones refused.
//! - `identity`: each process of a split its own Ed25519 key; the tokens its calls carry, and
//!   what a caller process may hand in (the events of its own modules only).
//! - `modules`: every module Banyan has, the one list the rest is built from.
//! - `server`: builds a process from its modules (storage, migrations, outbox relay, bus
//!   handlers, routes) and serves it; one path drains and closes it.
//! - `split`: a process of a split topology: transports, registry or directory, heartbeat.
//! - `openapi`: the document of the mounted routes, tagged by the modules that own them.
//! - `operations`: `/health`, `/ready` and the dead-letter routes of every process.
//! - `edge`: middleware every request passes: correlation id and trace context, timeout,
//!   one log line per request, JSON errors for unknown routes and panics.
//! - `topology`: `[topology]`, which process hosts each module and which transport reaches it.
//! - `registry`: the main process's registry of instances, and the other processes' side of it
//!   (registration, heartbeat, the directory they route by).
//! - `gateway`: the main process proxies the routes of modules hosted elsewhere.
//! - `route_policy`: `[[gateway.routes]]`, per route a rate limit, timeout, retries, breaker
//!   and body limit; the client's address (trusted proxies only).
//! - `revocation`: every hosted module follows `users.tokens_revoked.v1` into its own table
//!   and the process's authenticator, which then refuses the account's older tokens.
//! - `tls`: rustls for the public and internal listeners and the clients between processes.
//! - `cli`: `banyan serve [--process <name>]`, `banyan seed`, `banyan dead-letters list|replay`.
//! - `seed`: demo data through the modules' own routes.
//! - `telemetry`: JSON logs, and `/metrics` (HTTP per route, the bus per edge and placement,
//!   outboxes, queues, pools, registry, breakers, the process) on a listener of its own.

pub mod cli;
pub mod config;
mod data;
pub mod diagram;
mod edge;
mod gateway;
pub mod identity;
pub mod modules;
mod openapi;
mod operations;
pub mod registry;
mod revocation;
pub mod route_policy;
pub mod secrets;
mod seed;
pub mod server;
mod split;
pub mod telemetry;
pub mod tls;
pub mod topology;

pub use server::Server;
