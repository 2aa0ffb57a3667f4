//! What every module crate is built with, so that all seven have one shape.
//!
//! # Layout
//! - [`Module`], [`ModuleContext`]: the one registration point. The app starts each module
//!   with its own database, its outbox and the bus, and mounts the router it returns.
//! - [`ApiError`]: every error a client sees: a status and a JSON body
//!   `{"error": {"code", "message", "details"?}}` ([`ErrorBody`], its schema in the API
//!   document), never an internal detail.
//! - [`extract`]: `Json`, `Path` and `Query` extractors whose rejections are `ApiError`s, and
//!   [`extract::Cx`], the causal [`Context`](banyan_bus::Context) of the HTTP request.
//! - [`auth`]: JWT issuing and checking, the `Caller` extractor, roles, the `bearer` security
//!   scheme of the API document.
//! - [`Page`], [`Paged`]: pagination parameters and envelopes.
//! - [`timestamp`]: how instants stored as milliseconds are shown (RFC 3339).

pub mod auth;
mod error;
pub mod extract;
mod module;
mod page;
#[cfg(feature = "test-util")]
pub mod testing;

pub use error::{ApiError, ApiResult, ErrorBody, ErrorDetail};
pub use module::{Module, ModuleContext};
pub use page::{Page, Paged};

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
