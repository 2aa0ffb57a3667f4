//! What a module may do on the bus, and nothing more.

use std::{future::Future, sync::Arc, time::Duration};

use banyan_message::{Event, Rejection, Request};

use crate::{Bus, BusError, Context, Delivered, HandlerError};

/// A module's handle on the bus: it asks (`request`), answers (`handle`) and listens
/// (`subscribe`), always as the module it was made for, whose name it carries.
///
/// It cannot publish: a module's events leave through its [`Outbox`](crate::Outbox)
/// (`UnitOfWork::emit`), in the transaction of the change they report, or not at all. The
/// wiring of a process (transports, remote routes, holding and opening events) is done on the
/// [`Bus`] itself, by the app, never by a module.
#[derive(Debug, Clone)]
pub struct ModuleBus {
    bus: Bus,
    module: &'static str,
}

impl ModuleBus {
    /// The handle of `module` on `bus`.
    pub fn new(bus: &Bus, module: &'static str) -> Self {
        Self {
            bus: bus.clone(),
            module,
        }
    }

    /// The module this handle acts as.
    pub fn module(&self) -> &'static str {
        self.module
    }

    /// Sends request `R` and waits for its answer, through the edge from this module to
    /// `R`'s (its deadline, breaker, bulkhead and retries: see [`crate::policy`]).
    pub async fn request<R: Request>(
        &self,
        cx: &Context,
        request: R,
    ) -> Result<R::Response, BusError> {
        self.bus.request_as(self.module, cx, request, None).await
    }

    /// Sends request `R` through this module's edge and waits at most `deadline`.
    pub async fn request_within<R: Request>(
        &self,
        cx: &Context,
        request: R,
        deadline: Duration,
    ) -> Result<R::Response, BusError> {
        self.bus
            .request_as(self.module, cx, request, Some(deadline))
            .await
    }

    /// This module's edges used so far (to the modules it asked), with their breakers.
    pub fn edges(&self) -> Vec<crate::policy::EdgeState> {
        let prefix = format!("{}->", self.module);
        self.bus
            .edges()
            .into_iter()
            .filter(|edge| edge.edge.starts_with(&prefix))
            .collect()
    }

    /// Answers request `R` with `handler`, a plain function of the module's shared `state`,
    /// the request's context and the request (see [`Bus::handle`]).
    pub fn handle<R, S, Fut>(&self, state: &Arc<S>, handler: fn(Arc<S>, Context, R) -> Fut)
    where
        R: Request,
        S: Send + Sync + 'static,
        Fut: Future<Output = Result<R::Response, Rejection>> + Send + 'static,
    {
        let state = state.clone();
        self.bus.handle::<R, _, _>(self.module, move |cx, request| {
            handler(state.clone(), cx, request)
        });
    }

    /// Handles event `E` with `handler`, a plain function of the module's shared `state` and
    /// the delivery (see [`Bus::subscribe`]).
    pub fn subscribe<E, S, Fut>(&self, state: &Arc<S>, handler: fn(Arc<S>, Delivered<E>) -> Fut)
    where
        E: Event,
        S: Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let state = state.clone();
        self.bus
            .subscribe::<E, _, _>(self.module, move |delivered| {
                handler(state.clone(), delivered)
            });
    }
}
