//! Request/reply: one handler answers, on the caller's own task in process.

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use banyan_message::{Rejection, Request, module_of};
use futures::{FutureExt, future::BoxFuture};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    BusError, Context, Envelope,
    meters::IN_PROCESS,
    policy::Faults,
    transport::{RemoteReply, Transport},
};

/// The caller of requests the app makes itself (the CLI, the registry), not a module.
const APP: &str = "app";

use super::{Bus, codec, read, unavailable, write};

impl Bus {
    /// Registers the handler of request `R` in this process.
    ///
    /// In process a request runs its handler on the caller's own task: no hop to a worker, no
    /// serialization. At most `config.request_concurrency` of them run at once; callers beyond
    /// that wait their turn (a fair semaphore), which is the bus's backpressure for requests.
    ///
    /// # Panics
    /// If `R` already has a handler: that is a wiring mistake, caught at start-up.
    pub fn handle<R, F, Fut>(&self, module: &'static str, handler: F)
    where
        R: Request,
        F: Fn(Context, R) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Response, Rejection>> + Send + 'static,
    {
        let handler: BoxedRequestHandler<R> =
            Arc::new(move |cx, request| Box::pin(handler(cx, request)));
        let endpoint: Arc<dyn RequestEndpoint> = Arc::new(TypedEndpoint::<R> {
            module,
            handler,
            permits: Arc::new(Semaphore::new(self.inner.config.request_concurrency)),
            in_flight: self.inner.workers.clone(),
            faults: self.inner.faults.clone(),
        });
        let previous = write(&self.inner.requests).insert(R::SUBJECT, endpoint);
        assert!(
            previous.is_none(),
            "two handlers registered for {}",
            R::SUBJECT
        );
    }

    /// Sends request `R` and waits for its answer, within the edge's deadline, as the app
    /// (not as a module: a module asks through its [`ModuleBus`](crate::ModuleBus)).
    pub async fn request<R: Request>(
        &self,
        cx: &Context,
        request: R,
    ) -> Result<R::Response, BusError> {
        self.request_as(APP, cx, request, None).await
    }

    /// Sends request `R` and waits for its answer, at most `deadline`, as the app.
    pub async fn request_within<R: Request>(
        &self,
        cx: &Context,
        request: R,
        deadline: Duration,
    ) -> Result<R::Response, BusError> {
        self.request_as(APP, cx, request, Some(deadline)).await
    }

    /// Sends request `R` from module `caller` through the edge `caller` → `R`'s module: its
    /// bulkhead, breaker and retries (see [`crate::policy`]). The call waits at most
    /// `deadline` (the edge's timeout when `None`), and never longer than `cx` has left.
    pub(crate) async fn request_as<R: Request>(
        &self,
        caller: &'static str,
        cx: &Context,
        request: R,
        deadline: Option<Duration>,
    ) -> Result<R::Response, BusError> {
        if self.inner.closing.is_cancelled() {
            return Err(unavailable(R::SUBJECT, "the bus is shutting down"));
        }
        let route = self.inner.policies.route(caller, R::SUBJECT);
        let edge = &route.edge;
        let mut budget = deadline.unwrap_or_else(|| edge.timeout());
        if let Some(left) = cx.remaining() {
            budget = budget.min(left);
        }
        let started = Instant::now();
        let local = read(&self.inner.requests).get(R::SUBJECT).cloned();
        if let Some(endpoint) = local {
            let Some(endpoint) = endpoint.as_any().downcast_ref::<TypedEndpoint<R>>() else {
                return Err(codec(R::SUBJECT, "handler registered with another type"));
            };
            let answer = edge
                .call(R::SUBJECT, R::IDEMPOTENT, budget, |remaining, deadline| {
                    let message_id = Uuid::now_v7();
                    // The handler's own requests may use only what is left of this one's.
                    endpoint.call(
                        cx.handling(message_id, module_of(R::SUBJECT))
                            .until(deadline),
                        message_id,
                        request.clone(),
                        remaining,
                    )
                })
                .await;
            let elapsed = started.elapsed();
            route.meters.record(IN_PROCESS, &answer, elapsed);
            return answer;
        }
        let Some(remote) = self.remote_for(R::SUBJECT) else {
            return Err(BusError::NoHandler {
                subject: R::SUBJECT.into(),
            });
        };
        let body: Arc<[u8]> = serde_json::to_vec(&request)
            .map_err(|e| codec(R::SUBJECT, &e.to_string()))?
            .into();
        let answer = edge
            .call(R::SUBJECT, R::IDEMPOTENT, budget, |remaining, _| {
                let call = remote.request(cx.envelope(R::SUBJECT), body.clone(), remaining);
                async move {
                    let reply = match tokio::time::timeout(remaining, call).await {
                        Ok(reply) => reply?,
                        Err(_) => {
                            return Err(BusError::Timeout {
                                subject: R::SUBJECT.into(),
                                after: remaining,
                            });
                        }
                    };
                    // Decoded inside the edge, so that its breaker sees a rejection as the
                    // answer it is, as it does in process.
                    match reply {
                        RemoteReply::Ok(body) => serde_json::from_slice(&body)
                            .map_err(|e| codec(R::SUBJECT, &e.to_string())),
                        RemoteReply::Rejected(rejection) => Err(BusError::Rejected(rejection)),
                    }
                }
            })
            .await;
        let placement = remote.placement();
        route.meters.record(placement, &answer, started.elapsed());
        answer
    }

    fn remote_for(&self, subject: &str) -> Option<Arc<dyn Transport>> {
        read(&self.inner.remotes).get(module_of(subject)).cloned()
    }
}

pub(super) type BoxedRequestHandler<R> = Arc<
    dyn Fn(Context, R) -> BoxFuture<'static, Result<<R as Request>::Response, Rejection>>
        + Send
        + Sync,
>;

/// A registered request handler, seen without its type: typed callers downcast it,
/// remote callers go through JSON.
pub(super) trait RequestEndpoint: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn call_json<'a>(
        &'a self,
        envelope: Envelope,
        body: &'a [u8],
        deadline: Duration,
    ) -> BoxFuture<'a, Result<RemoteReply, BusError>>;
    fn close(&self);
    fn subject(&self) -> &'static str;
}

pub(super) struct TypedEndpoint<R: Request> {
    pub(super) module: &'static str,
    pub(super) handler: BoxedRequestHandler<R>,
    /// How many of these requests may run at once; closed at shutdown so no new one starts.
    pub(super) permits: Arc<Semaphore>,
    /// Shutdown waits until every handler that started has finished.
    pub(super) in_flight: TaskTracker,
    /// The process's injected faults (`bus.faults`, tests and demonstrations only), which can
    /// change while it runs.
    pub(super) faults: Arc<Faults>,
}

impl<R: Request> TypedEndpoint<R> {
    async fn call(
        &self,
        cx: Context,
        message_id: Uuid,
        request: R,
        deadline: Duration,
    ) -> Result<R::Response, BusError> {
        let work = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| unavailable(R::SUBJECT, "the bus is shutting down"))?;
            let _in_flight = self.in_flight.token();
            if let Some(fault) = self.faults.of(R::SUBJECT) {
                fault.strike(R::SUBJECT).await?;
            }
            let span = tracing::info_span!(
                "request",
                module = self.module,
                subject = R::SUBJECT,
                correlation_id = %cx.correlation_id(),
                message_id = %message_id,
                trace_id = %cx.trace().trace_hex(),
                span_id = %cx.trace().span_hex(),
                parent_span_id = %cx.parent_span_hex(),
            );
            AssertUnwindSafe((self.handler)(cx, request).instrument(span))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(subject = R::SUBJECT, "Request handler panicked.");
                    Err(Rejection::new("internal", "the handler failed"))
                })
                .map_err(BusError::Rejected)
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(answer) => answer,
            Err(_) => Err(BusError::Timeout {
                subject: R::SUBJECT.into(),
                after: deadline,
            }),
        }
    }
}

impl<R: Request> RequestEndpoint for TypedEndpoint<R> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn call_json<'a>(
        &'a self,
        envelope: Envelope,
        body: &'a [u8],
        deadline: Duration,
    ) -> BoxFuture<'a, Result<RemoteReply, BusError>> {
        Box::pin(async move {
            let request: R =
                serde_json::from_slice(body).map_err(|e| codec(R::SUBJECT, &e.to_string()))?;
            // The handler's own requests may use only what is left of the caller's deadline.
            let cx = Context::caused_by(&envelope, self.module).within(deadline);
            match self.call(cx, envelope.message_id, request, deadline).await {
                Ok(response) => serde_json::to_vec(&response)
                    .map(|body| RemoteReply::Ok(body.into()))
                    .map_err(|e| codec(R::SUBJECT, &e.to_string())),
                Err(BusError::Rejected(rejection)) => Ok(RemoteReply::Rejected(rejection)),
                Err(other) => Err(other),
            }
        })
    }

    fn close(&self) {
        self.permits.close();
    }

    fn subject(&self) -> &'static str {
        R::SUBJECT
    }
}
