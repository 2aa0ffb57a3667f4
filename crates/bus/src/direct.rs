//! What the adapters that call an instance directly (HTTP and gRPC, unlike NATS, where the
//! broker picks) share: which instance of a module to try next, a request that moves on to
//! the next instance only when nothing was sent, and an event pushed to every subscribing
//! module with retries and backoff.

use std::time::{Duration, Instant};

use banyan_message::module_of;
use futures::future::join_all;

use crate::{Backoff, BusError, RemoteReply, balance::Balancer};

/// What one try of a request at one instance came to.
pub(crate) enum Attempt {
    /// The instance answered, or the call may have reached its handler: the outcome stands.
    Answered(Result<RemoteReply, BusError>),
    /// Nothing was sent (no connection, not even a URL): the next instance is safe to try.
    Refused(String),
}

/// Sends a request to one of `instances` (the base URLs of the module of `subject`), starting
/// with the one the module's balance rule picks (`key` for consistent hashing); moves on only
/// past instances that were never reached, and never past the deadline. `attempt` gets an
/// instance's base URL and the time left; the call counts as in flight to it meanwhile.
pub(crate) async fn request_any<F, Fut>(
    mut instances: Vec<String>,
    balancer: &Balancer,
    subject: &str,
    key: Option<&str>,
    deadline: Duration,
    mut attempt: F,
) -> Result<RemoteReply, BusError>
where
    F: FnMut(String, Duration) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let started = Instant::now();
    let module = module_of(subject);
    if instances.is_empty() {
        return Err(unavailable(
            subject,
            format!("no instance of module `{module}` is known"),
        ));
    }
    balancer.order(module, &mut instances, key);
    let mut refused = Vec::new();
    for base in &instances {
        let remaining = deadline.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(timeout(subject, deadline));
        }
        let _in_flight = balancer.begin(base);
        match attempt(base.clone(), remaining).await {
            Attempt::Answered(outcome) => return outcome,
            Attempt::Refused(reason) => {
                tracing::debug!(%subject, instance = %base, %reason, "Bus instance unreachable; trying the next.");
                refused.push(format!("{base}: {reason}"));
            }
        }
    }
    Err(unavailable(
        subject,
        format!(
            "no instance of module `{module}` could be reached ({})",
            refused.join("; ")
        ),
    ))
}

/// What one push of an event to one instance came to.
pub(crate) enum Push {
    Done,
    /// Worth another attempt (nothing answered, or the receiver is busy or restarting).
    Retry(String),
    /// Another attempt would meet the same answer, or might pile up behind the first.
    Fail(BusError),
}

/// Pushes an event on `subject` to one instance of each of `modules`, all at once; `Ok` only
/// when every module took it. `push` is one module's whole push, retries included.
pub(crate) async fn push_to_all<'m, F, Fut>(
    subject: &str,
    modules: &'m [String],
    push: F,
) -> Result<(), BusError>
where
    F: Fn(&'m str) -> Fut,
    Fut: Future<Output = Result<(), BusError>>,
{
    let failures: Vec<BusError> = join_all(modules.iter().map(|m| push(m)))
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.into_iter().next().expect("one failure")),
        _ => Err(unavailable(
            subject,
            failures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

/// How a push is retried: attempts in all, the first included, and the pauses between them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retries {
    pub(crate) attempts: u32,
    pub(crate) backoff: Backoff,
}

/// Pushes an event to one instance of `module` (the one its balance rule picks among what
/// `instances` says on each attempt), retrying as `retries` says. `once` is one push to the
/// instance at the base URL it is given.
pub(crate) async fn push_with_retries<I, F, Fut>(
    retries: Retries,
    instances: I,
    balancer: &Balancer,
    module: &str,
    subject: &str,
    once: F,
) -> Result<(), BusError>
where
    I: Fn() -> Vec<String>,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Push>,
{
    let attempts = retries.attempts.max(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        if attempt > 1 {
            tokio::time::sleep(retries.backoff.delay(attempt - 1)).await;
        }
        let mut instances = instances();
        let outcome = if instances.is_empty() {
            Push::Retry(format!("no instance of module `{module}` is known"))
        } else {
            balancer.order(module, &mut instances, None);
            let _in_flight = balancer.begin(&instances[0]);
            once(instances[0].clone()).await
        };
        match outcome {
            Push::Done => return Ok(()),
            Push::Fail(error) => return Err(error),
            Push::Retry(reason) => {
                tracing::debug!(%subject, module, attempt, %reason, "Pushing an event failed; retrying.");
                last = reason;
            }
        }
    }
    Err(unavailable(
        subject,
        format!("module `{module}` did not take the event after {attempts} attempts: {last}"),
    ))
}

/// An error with its causes, which is where the HTTP stacks say what actually happened.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(crate) fn unavailable(subject: &str, reason: String) -> BusError {
    BusError::Unavailable {
        subject: subject.into(),
        reason,
    }
}

pub(crate) fn timeout(subject: &str, after: Duration) -> BusError {
    BusError::Timeout {
        subject: subject.into(),
        after,
    }
}
