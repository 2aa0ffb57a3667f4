//! The typed bus that modules talk over, and the machinery that makes its events reliable.
//!
//! One API whatever the placement: `request` (exactly one handler answers, within a deadline)
//! and `publish` (every subscribing module gets the event once). In process, messages move as
//! typed values through bounded queues, never serialized; a module hosted elsewhere is reached
//! through a [`Transport`], which is where JSON begins.
//!
//! # Layout
//! - [`Bus`]: the handle. `handle`/`request` for request-reply, `subscribe`/`publish` for
//!   events, `shutdown` to drain.
//! - [`ModuleBus`]: what a module may do (ask, answer, listen), as the module it was made for.
//! - [`Envelope`], [`Context`], [`CorrelationId`], [`TraceContext`]: what travels with every
//!   message, and the causal context handlers send further messages in.
//! - [`BusError`]: no handler, timeout, unavailable, circuit open, overloaded, rejected (a
//!   domain [`Rejection`]), codec.
//! - [`Outbox`], [`UnitOfWork`]: events recorded in the module's own transaction and relayed
//!   after commit; the inbox that makes redelivery harmless.
//! - [`dead_letter`]: deliveries that failed every attempt, listed and replayed.
//! - [`Transport`]: the seam the HTTP, gRPC and NATS adapters implement.
//! - [`http`]: the HTTP adapter (requests as JSON POSTs, events pushed to subscribers).
//! - [`grpc`]: the gRPC adapter (the same requests and pushed events as unary calls over one
//!   HTTP/2 connection per instance).
//! - [`nats`]: the NATS adapter (requests on per-module subjects with queue groups, events on
//!   a JetStream stream with one durable consumer per subscribing module).
//! - [`balance`]: which instance of a moved module a call goes to (round robin, least
//!   outstanding, random, consistent hash), for the HTTP and gRPC adapters and the gateway.
//! - [`policy`]: edge policies (deadline, retries, circuit breaker, bulkhead) applied to every
//!   request whatever the placement, and faults injected into handlers for tests.
//! - [`meters`]: what the bus counts and times (requests per edge and placement, events),
//!   through the `metrics` facade.
//! - [`failpoint`]: named places where tests stop a real process to kill it.
//! - `testing` (feature `test-util`): NATS for tests, a stream of their own or a private
//!   server they may kill.
//! - [`MESSAGING_MIGRATIONS`]: the outbox, inbox and dead-letter tables, migrated into every
//!   module's schema with their own history table.

mod backoff;
pub mod balance;
mod bus;
mod config;
pub mod dead_letter;
mod direct;
mod envelope;
mod error;
pub mod failpoint;
mod group_commit;
pub mod grpc;
pub mod http;
mod lock;
pub mod meters;
mod module_bus;
pub mod nats;
mod outbox;
pub mod policy;
#[cfg(feature = "test-util")]
pub mod testing;
mod transport;
pub mod wire;

pub use backoff::Backoff;
pub use banyan_message::{Event, Message, Rejection, RejectionKind, Request, module_of};
pub use bus::{Accepted, Bus, Delivered, Inbound, Wiring};
pub use config::BusConfig;
pub use envelope::{Context, CorrelationId, Envelope, TraceContext};
pub use error::{BusError, HandlerError};
pub use module_bus::ModuleBus;
pub use outbox::{Backlog, Outbox, UnitOfWork};
pub use transport::{RemoteReply, Transport};

/// The bus's tables (outbox, inbox, dead letters), applied inside every module's schema. Their
/// history lives in `_messaging_migrations`, apart from the module's own `_sqlx_migrations`.
pub static MESSAGING_MIGRATIONS: std::sync::LazyLock<banyan_db::sqlx::migrate::Migrator> =
    std::sync::LazyLock::new(|| {
        static BASE: banyan_db::sqlx::migrate::Migrator =
            sqlx::migrate!("../../migrations/messaging");
        banyan_db::migrator_with_table(&BASE, "_messaging_migrations")
    });
