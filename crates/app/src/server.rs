//! One Banyan process: its modules, its bus, its HTTP server.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use axum::{Router, body::Bytes, extract::DefaultBodyLimit, middleware, routing::get};
use banyan_bus::{
    Bus, ModuleBus, Outbox,
    nats::{self},
};
use banyan_db::Db;
use banyan_kit::{ModuleContext, auth::Authenticator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::{
    config::Settings,
    edge,
    gateway::Gateway,
    identity::Identity,
    modules::all_modules,
    openapi::{
        OPENAPI_PATH, check_schema_names, document_base, document_tags, serve_document,
        tag_operations,
    },
    operations::{self, FaultControl, Hosted, fault_routes, operations_routes},
    registry::RegistryState,
    route_policy::{self, Peer, RoutePolicies},
    split::{Split, wire_split},
    tls::{Protocols, TlsListener},
};

/// A built process, ready to serve.
#[derive(Debug)]
pub struct Server {
    settings: Settings,
    bus: Bus,
    hosted: Arc<BTreeMap<&'static str, Hosted>>,
    router: Router,
    /// The internal listener's routes (the bus's and the registry's), in a split.
    internal: Option<Router>,
    /// TLS on the public listener, and on the internal one.
    public_tls: Option<Arc<rustls::ServerConfig>>,
    internal_tls: Option<Arc<rustls::ServerConfig>>,
    /// What runs beside the modules when the topology places some of them elsewhere.
    split: Option<Split>,
    /// The metrics listener, bound at build so its address is known before serving, and its
    /// routes.
    metrics: Option<(TcpListener, Router)>,
}

impl Server {
    /// Opens every module's storage, runs its migrations, starts it on the bus and mounts its
    /// routes behind the edge middleware.
    pub async fn build(settings: Settings, figment: figment::Figment) -> anyhow::Result<Self> {
        // Held until every module has subscribed: see `Bus::held`.
        let Some(jwt_secret) = &settings.auth.jwt_secret else {
            anyhow::bail!("auth.jwt_secret is not set (`banyan serve` generates one on loopback)");
        };
        // Installed before anything counts: a meter made before the recorder would be a no-op.
        crate::telemetry::meters::handle();
        let bus = Bus::held(settings.bus.clone());
        let auth = Authenticator::new(
            jwt_secret.as_bytes(),
            Duration::from_secs(settings.auth.token_ttl_secs),
        );
        let mut hosted = BTreeMap::new();
        let mut routes = OpenApiRouter::with_openapi(document_base());
        let mut started = Vec::new();
        let topology = Arc::new(settings.topology.clone());
        let hosted_here = |name: &str| {
            topology.hosts(name)
                && settings
                    .server
                    .modules
                    .as_ref()
                    .is_none_or(|modules| modules.iter().any(|m| m == name))
        };
        let mut split = if topology.is_active() {
            let here = all_modules()
                .iter()
                .map(|m| m.name())
                .filter(|name| hosted_here(name))
                .collect();
            let exposed = settings
                .listening()
                .into_iter()
                .find(|addr| !addr.ip().is_loopback());
            let calls = all_modules()
                .iter()
                .map(|m| (m.name(), m.calls()))
                .collect();
            let identity =
                Identity::load(topology.clone(), calls, &settings.server.state_dir, exposed)
                    .map_err(|(key, reason)| {
                        anyhow::anyhow!("invalid value for `{key}`: {reason}")
                    })?;
            Some(wire_split(&bus, topology.clone(), here, Arc::new(identity)).await?)
        } else {
            None
        };
        for module in all_modules().into_iter().filter(|m| hosted_here(m.name())) {
            let name = module.name();
            let db = Db::open(
                name,
                &settings.database,
                &[
                    &*banyan_bus::MESSAGING_MIGRATIONS,
                    &*crate::revocation::REVOCATION_MIGRATIONS,
                    module.migrations(),
                ],
            )
            .await?;
            let outbox = Outbox::start(&bus, db.clone());
            outbox.declare_publishes(module.publishes());
            crate::revocation::follow(&ModuleBus::new(&bus, name), &outbox, &auth).await?;
            let ctx = ModuleContext {
                bus: ModuleBus::new(&bus, name),
                db: db.clone(),
                outbox: outbox.clone(),
                auth: auth.clone(),
                config: figment.clone(),
            };
            let mut module_routes = module.start(ctx).await?;
            // A fault injected into the module (`bus.faults.<module>`, or set at run time)
            // slows or fails its routes as it does its bus handlers, in whichever process
            // hosts it. Without one, a request pays one atomic load here.
            let faults = bus.clone();
            module_routes = module_routes.layer(middleware::from_fn(
                move |request: axum::extract::Request, next: middleware::Next| {
                    let fault = faults.fault_of(name);
                    async move {
                        match fault {
                            Some(fault) => match fault.strike(name).await {
                                Ok(()) => next.run(request).await,
                                Err(error) => axum::response::IntoResponse::into_response(
                                    banyan_kit::ApiError::from(error),
                                ),
                            },
                            None => next.run(request).await,
                        }
                    }
                },
            ));
            tag_operations(module_routes.get_openapi_mut(), name);
            check_schema_names(routes.get_openapi(), module_routes.get_openapi(), name)?;
            routes = routes.merge(module_routes);
            hosted.insert(name, Hosted { db, outbox });
            started.push((name, module.description()));
            tracing::info!(module = name, "Module started.");
        }
        // Main of a split serves the moved modules' routes through its gateway, so its
        // document carries them too, as each module describes them (their operations here
        // are documents only: the gateway answers them).
        if topology.is_active() && topology.is_main() {
            for module in all_modules()
                .into_iter()
                .filter(|m| !topology.hosts(m.name()))
            {
                let mut document = module.document();
                tag_operations(&mut document, module.name());
                check_schema_names(routes.get_openapi(), &document, module.name())?;
                routes = routes.merge(OpenApiRouter::with_openapi(document));
                started.push((module.name(), module.description()));
            }
        }
        let hosted = Arc::new(hosted);
        // Rate limits count where clients arrive: the monolith, or main in a split (a moved
        // module's public traffic comes through main's gateway).
        let behind_gateway = topology.is_active() && topology.process != "main";
        // Behind the gateway, main's own address is a trusted proxy: the client's address is
        // the one main's gateway put in X-Forwarded-For.
        let mut gateway_config = settings.gateway.clone();
        if behind_gateway {
            let mains = topology.registry_urls().into_iter().filter_map(|url| {
                let url = reqwest::Url::parse(&url).ok()?;
                url.host_str()?
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .ok()
            });
            gateway_config.trusted_proxies.extend(mains);
        }
        let route_policies = Arc::new(RoutePolicies::new(
            &gateway_config,
            &settings.bus.policy.breaker,
            (
                settings.server.request_timeout(),
                settings.server.max_body_bytes,
                settings.server.max_in_flight_per_module,
            ),
            !behind_gateway,
        ));
        route_policy::spawn_cleanup(&route_policies);
        // Main of a split tells in /ready which modules elsewhere have an instance in rotation.
        let elsewhere = split
            .as_ref()
            .and_then(|split| split.registry.clone())
            .map(|registry| {
                Arc::new(move || placed_elsewhere(&registry.listing())) as operations::Elsewhere
            });
        let operations = operations_routes(hosted.clone(), elsewhere)
            .merge(route_policy::admin_routes(route_policies.clone()))
            .merge(fault_routes(FaultControl {
                bus: bus.clone(),
                enabled: settings.bus.fault_api,
            }));
        check_schema_names(routes.get_openapi(), operations.get_openapi(), "app")?;
        // Every route above came with its operation: the document is what is mounted.
        let (routes, mut openapi) = routes.merge(operations).split_for_parts();
        openapi.tags = Some(document_tags(started));
        let document = Bytes::from(openapi.to_json()?);
        let mut routes = routes
            .route(OPENAPI_PATH, get(move || serve_document(document.clone())))
            .merge(crate::openapi::docs_routes());
        let mut internal = None;
        if let Some(split) = &mut split {
            if let Some(client) = split.nats_client.clone() {
                // Every handler and subscription is registered: serve them over NATS.
                let stop = CancellationToken::new();
                let handle =
                    nats::serve(bus.clone(), client, topology.nats.clone(), stop.clone()).await?;
                split.nats = Some((handle, stop));
            }
            routes = match &split.registry {
                // The main process: the registry, and the gateway for the modules elsewhere.
                Some(registry) => {
                    let gateway = Arc::new(Gateway::new(
                        topology.clone(),
                        registry.clone(),
                        settings.server.request_timeout(),
                        Duration::from_millis(topology.http.connect_timeout_ms),
                        settings.server.max_body_bytes,
                    )?);
                    let state = RegistryState {
                        registry: registry.clone(),
                        peers: split.peers.clone(),
                        routes: route_policies.clone(),
                    };
                    internal = Some(crate::registry::internal_routes(state.clone()));
                    routes
                        .merge(crate::registry::public_routes(state))
                        .fallback(move |request: axum::extract::Request| {
                            gateway.clone().handle(request)
                        })
                }
                None => routes.fallback(edge::not_found),
            };
        } else {
            routes = routes.fallback(edge::not_found);
        }
        let limits = edge::Limits {
            timeout: settings.server.request_timeout(),
            max_body_bytes: settings.server.max_body_bytes as u64,
        };
        let edged = |routes: Router| {
            routes
                .method_not_allowed_fallback(edge::method_not_allowed)
                // Outermost last: the edge sees every request first and every response last.
                .layer(DefaultBodyLimit::max(settings.server.max_body_bytes))
                .layer(edge::authenticator_layer(auth.clone()))
                // Load shedding: beyond server.max_in_flight requests at once (one limit for
                // the whole listener), a fast 503 instead of a queue.
                .layer(
                    tower::ServiceBuilder::new()
                        .layer(axum::error_handling::HandleErrorLayer::new(edge::shed))
                        .load_shed()
                        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                            settings.server.max_in_flight,
                        )),
                )
                .layer(middleware::from_fn_with_state(limits, edge::context))
                .layer(CatchPanicLayer::custom(edge::panic_response))
        };
        // Public routes only: the internal listener's callers carry the processes' secret.
        // Outermost last: the token is checked (and its caller known) before the route's
        // rate limit, which keys on the caller.
        let metrics_routes = route_policies.clone();
        let router = edged(
            routes
                .layer(middleware::from_fn_with_state(
                    route_policies,
                    route_policy::apply,
                ))
                .layer(middleware::from_fn(edge::refuse_bad_tokens))
                // Sees every answer a route gave, refusals of its rate limit and timeouts too.
                .layer(middleware::from_fn(crate::telemetry::meters::http_requests)),
        );
        if split.is_some() {
            let mut routes = edged(
                internal
                    .take()
                    .unwrap_or_default()
                    .fallback(edge::not_found),
            );
            // The bus's own endpoints: outside the edge (they carry their envelope, their
            // callers' identities and their own body limit) and outside the OpenAPI document.
            // gRPC shares the listener: HTTP/2 is told from HTTP/1.1 by its first bytes.
            if let Some(peers) = split.as_ref().map(|s| s.peers.clone()) {
                if topology.uses_http() {
                    routes = routes.merge(banyan_bus::http::routes(bus.clone(), peers.clone()));
                }
                if topology.uses_grpc() {
                    routes = routes.merge(banyan_bus::grpc::routes(bus.clone(), peers));
                }
            }
            internal = Some(routes);
        }
        // Every module of the process has subscribed, every transport is wired.
        bus.wiring().open_events();
        let public_tls = match &settings.server.tls {
            Some(tls) => Some(
                crate::tls::server_config(&tls.cert_file, &tls.key_file, Protocols::Http1)
                    .map_err(|e| anyhow::anyhow!("server.tls: {e}"))?,
            ),
            None => None,
        };
        let internal_tls = match topology.tls.as_ref().filter(|_| split.is_some()) {
            Some(tls) => Some(
                crate::tls::server_config(&tls.cert_file, &tls.key_file, Protocols::Http2AndHttp1)
                    .map_err(|e| anyhow::anyhow!("topology.tls: {e}"))?,
            ),
            None => None,
        };
        let metrics = if settings.metrics.enabled {
            let bind = crate::telemetry::meters::bind_addr(&settings.metrics, topology.is_main());
            let listener = TcpListener::bind(bind)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {bind} (metrics.addr): {e}"))?;
            let own_url = metrics_url(&settings.metrics, listener.local_addr()?);
            let mut scrape = crate::telemetry::meters::Scrape::new(
                bus.clone(),
                hosted.clone(),
                split.as_ref().and_then(|s| s.registry.clone()),
                metrics_routes,
                (own_url, topology.process.clone()),
            );
            scrape.nats = (split.as_ref())
                .and_then(|s| s.nats.as_ref())
                .map(|(handle, _)| handle.clone());
            let scrape = Arc::new(scrape);
            // `/metrics`, `/targets`, the dashboard, and JSON 404s for anything else.
            let routes = crate::telemetry::meters::routes(scrape.clone())
                .merge(crate::telemetry::dashboard::routes(scrape))
                .fallback(crate::edge::not_found);
            Some((listener, routes))
        } else {
            None
        };
        Ok(Self {
            settings,
            bus,
            hosted,
            router,
            internal,
            public_tls,
            internal_tls,
            split,
            metrics,
        })
    }

    /// The HTTP application, for tests that call it without a socket.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Stops without serving: drains the bus and closes the databases.
    pub async fn stop(self) {
        self.drain().await;
    }

    /// The one way a process stops: the bus drains what it accepted (workers, then relays),
    /// the NATS server side stops taking messages, and the databases close. Events not yet
    /// delivered stay in the outboxes for the next start.
    async fn drain(&self) -> bool {
        let drained = self.bus.shutdown().await;
        if let Some(split) = &self.split {
            split.stop_nats().await;
        }
        for hosted in self.hosted.values() {
            hosted.db.close().await;
        }
        // The last spans (the drain's handlers' too) go out before the process ends; the
        // flush waits on the exporter's thread, so not on a runtime worker.
        let _ = tokio::task::spawn_blocking(crate::telemetry::traces::flush).await;
        drained
    }

    /// Where `/metrics` is served, when `metrics.enabled`.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops taking requests (leaving the registry
    /// first, in a split), and [drains](Self::drain).
    pub async fn run(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        let internal = match (&self.split, &self.internal) {
            (Some(split), Some(routes)) => {
                let bind = split.topology.internal_bind();
                let listener = TcpListener::bind(bind).await.map_err(|e| {
                    anyhow::anyhow!("cannot listen on {bind} (topology.internal_addr): {e}")
                })?;
                Some((listener.local_addr()?, listener, routes.clone()))
            }
            _ => None,
        };
        let internal_addr = internal.as_ref().map(|(addr, _, _)| *addr);
        let metrics_addr = self.metrics_addr();
        let metrics_url = metrics_addr.map(|addr| metrics_url(&self.settings.metrics, addr));
        let modules = self.hosted.keys().collect::<Vec<_>>();
        let process = self.split.as_ref().map(|s| s.topology.process.clone());
        tracing::info!(
            addr = %addr,
            internal_addr = internal_addr.map(|a| a.to_string()),
            metrics_addr = metrics_addr.map(|a| a.to_string()),
            tls = self.public_tls.is_some(),
            internal_tls = self.internal_tls.is_some(),
            modules = ?modules,
            process,
            "Banyan is serving."
        );
        let stop_beating = CancellationToken::new();
        let mut beating = None;
        let mut leaving = None;
        if let (Some(split), Some(internal_addr)) = (&self.split, internal_addr) {
            for (bound, configured, key) in [
                (
                    addr,
                    &split.topology.advertise_url,
                    "topology.advertise_url",
                ),
                (
                    internal_addr,
                    &split.topology.internal_advertise_url,
                    "topology.internal_advertise_url",
                ),
            ] {
                if bound.ip().is_unspecified() && configured.is_none() {
                    tracing::warn!(
                        %bound,
                        key,
                        "Listening on every interface but advertising loopback: only processes \
                         on this host can reach it. Set the address the others should use."
                    );
                }
            }
            let registration = split.registration(
                &self.bus,
                split.topology.advertised(addr, self.public_tls.is_some()),
                split.topology.internal_advertised(internal_addr),
                metrics_url,
            );
            if let Some(registry) = &split.registry {
                registry.register_own(registration);
            } else if let Some(heartbeat) = &split.heartbeat {
                beating = Some(tokio::spawn(
                    heartbeat.clone().run(registration, stop_beating.clone()),
                ));
                leaving = Some((heartbeat.clone(), split.instance_id.clone()));
            }
        }
        let stopping = stop_beating.clone();
        let shutdown = async move {
            shutdown.await;
            // Out of rotation first, so nothing new is routed here while it drains.
            stopping.cancel();
            if let Some((heartbeat, instance_id)) = leaving {
                heartbeat.leave(&instance_id).await;
            }
        };
        // The internal listener stops with the public one, and only then: in-flight bus calls
        // finish (the bus drains after both).
        let internal_stop = CancellationToken::new();
        let internal_served = internal.map(|(_, listener, routes)| {
            let stop = internal_stop.clone();
            let tls = self.internal_tls.clone();
            tokio::spawn(serve(listener, tls, routes, async move {
                stop.cancelled().await;
            }))
        });
        // The metrics listener answers until the very end, the drain included.
        let metrics_stop = CancellationToken::new();
        let metrics_served = self.metrics.take().map(|(listener, routes)| {
            let stop = metrics_stop.clone();
            tokio::spawn(serve(listener, None, routes, async move {
                stop.cancelled().await;
            }))
        });
        let public = serve(
            listener,
            self.public_tls.clone(),
            self.router.clone(),
            shutdown,
        )
        .await;
        internal_stop.cancel();
        if let Some(served) = internal_served {
            served.await??;
        }
        public?;
        stop_beating.cancel();
        if let Some(beating) = beating {
            let _ = beating.await;
        }
        tracing::info!("HTTP server stopped; draining the bus.");
        let drained = self.drain().await;
        metrics_stop.cancel();
        if let Some(served) = metrics_served {
            let _ = served.await;
        }
        tracing::info!(drained, "Banyan stopped.");
        Ok(())
    }
}

/// Serves `router` on `listener`, over TLS if `tls` is given, until `shutdown` resolves. Every
/// connection has Nagle's algorithm off: an HTTP/2 answer is several writes (headers, data,
/// trailers), and with it on a gRPC call waited for the peer's delayed ACK (the bench's gRPC
/// case at 16 callers: 6,900 calls/s with it, 15,400 without).
async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(tls) => {
            axum::serve(
                TlsListener::new(listener, tls)?,
                router.into_make_service_with_connect_info::<Peer>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
        None => {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
/// Where the others (and Prometheus) reach this process's `/metrics`: `metrics.advertise_url`,
/// else the bound address.
fn metrics_url(config: &crate::config::MetricsConfig, bound: std::net::SocketAddr) -> String {
    config
        .advertise_url
        .clone()
        .unwrap_or_else(|| crate::topology::TopologyConfig::url_for(None, bound, false))
}

pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("Shutdown signal received.");
}

/// The modules of `listing` placed in another process, for main's `/ready`.
fn placed_elsewhere(listing: &crate::registry::Listing) -> BTreeMap<String, operations::Placed> {
    listing
        .modules
        .iter()
        .filter(|(_, module)| module.process != crate::topology::MAIN)
        .map(|(name, module)| {
            let healthy = module
                .instances
                .iter()
                .filter(|i| i.health == crate::registry::Health::Healthy)
                .count();
            let transport = serde_json::to_value(module.transport)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            (
                name.clone(),
                operations::Placed {
                    process: module.process.clone(),
                    transport,
                    healthy_instances: healthy,
                    instances: module.instances.len(),
                    status: if healthy > 0 { "ok" } else { "down" },
                },
            )
        })
        .collect()
}
