//! What every module crate is built with, so that all seven have one shape.
//!
//! # Layout
//! - [`Module`], [`ModuleContext`], [`module!`]: the one registration point, declared once
//!   per module crate. The app starts each module with its own database, its outbox and its
//!   bus handle, and mounts the router it returns.
//! - [`ApiError`]: every error a client sees: a status and a JSON body
//!   `{"error": {"code", "message", "details"?}}` ([`ErrorBody`], its schema in the API
//!   document), never an internal detail.
//! - [`extract`]: `Json`, `Path` and `Query` extractors whose rejections are `ApiError`s, and
//!   [`extract::Cx`], the causal [`Context`](banyan_bus::Context) of the HTTP request.
//! - [`auth`]: JWT issuing and checking, the `Caller` extractor, roles, the `bearer` security
//!   scheme of the API document.
//! - [`Page`], [`Paged`]: pagination parameters and envelopes.
//! - [`Waiters`]: request-response over events, for a client that waits for an outcome an
//!   event handler decides.
//! - [`read_model`]: announcements between a module's instances over Redis, so that each
//!   forgets an entry of its in-memory read model as soon as any instance changes it.
//! - [`timestamp`]: how instants stored as milliseconds are shown (RFC 3339).

pub mod auth;
mod error;
pub mod extract;
mod module;
mod page;
pub mod read_model;
#[cfg(feature = "test-util")]
pub mod testing;
mod waiters;

pub use error::{
    AdminErrors, ApiError, ApiResult, AuthErrors, BodyErrors, ErrorBody, ErrorCause, ErrorDetail,
    Invalid, ServerErrors,
};
pub use module::{Module, ModuleContext};
pub use page::{Page, Paged};
pub use waiters::{Waited, Waiters, Watch};

/// What [`module!`] expands to names; not an API.
#[doc(hidden)]
pub mod __private {
    pub use anyhow;
    pub use banyan_bus::Message;
    pub use banyan_db::sqlx::migrate::Migrator;
    pub use futures::future::BoxFuture;
    pub use utoipa::openapi::OpenApi;
    pub use utoipa_axum::router::OpenApiRouter;

    /// An event's subject; a message that is not an event does not compile in `publishes`.
    pub const fn event_subject<E: banyan_bus::Event>() -> &'static str {
        E::SUBJECT
    }
}

/// Formats milliseconds since the epoch as RFC 3339, as the API shows instants.
pub fn timestamp(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
