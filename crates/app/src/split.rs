//! A process of a split topology: its place in the registry, its transports, and how it is
//! wired before its modules start.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use banyan_bus::{
    Bus, Transport,
    grpc::GrpcTransport,
    http::{HttpTransport, Instances, Peers, Subscribers},
    nats::{self, NatsTransport, ServeHandle},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    modules::all_modules,
    registry::{
        Awareness, Directory, Heartbeat, InstanceTransport, PushedEvents, RegisteredModule,
        Registration, Registry,
    },
    topology::{TopologyConfig, TransportKind},
};

/// A process of a split topology: its place in the registry and its transports.
#[derive(Debug)]
pub(crate) struct Split {
    pub(crate) topology: Arc<TopologyConfig>,
    pub(crate) instance_id: String,
    /// This process's identity, and what it lets other processes do.
    pub(crate) peers: Arc<dyn Peers>,
    /// The modules hosted here.
    pub(crate) here: BTreeSet<&'static str>,
    /// The main process keeps the registry...
    pub(crate) registry: Option<Arc<Registry>>,
    /// ...the others register with it.
    pub(crate) heartbeat: Option<Arc<Heartbeat>>,
    /// The NATS connection, when a module is reached over NATS...
    pub(crate) nats_client: Option<async_nats::Client>,
    /// ...and the server side on it, once the modules have started.
    pub(crate) nats: Option<(ServeHandle, CancellationToken)>,
}

impl Split {
    /// This process as the registry lists it.
    pub(crate) fn registration(
        &self,
        bus: &Bus,
        base_url: String,
        bus_url: String,
        metrics_url: Option<String>,
    ) -> Registration {
        Registration {
            instance_id: self.instance_id.clone(),
            process: self.topology.process.clone(),
            base_url,
            bus_url,
            metrics_url,
            weight: self.topology.weight,
            modules: self
                .here
                .iter()
                .map(|&name| RegisteredModule {
                    name: name.to_owned(),
                    transport: self
                        .topology
                        .transport_of(name)
                        .map_or(InstanceTransport::InProcess, Into::into),
                    subscriptions: bus
                        .wiring()
                        .subscriptions_of(name)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                })
                .collect(),
        }
    }

    /// Stops taking NATS messages, once the bus has drained.
    pub(crate) async fn stop_nats(&self) {
        if let Some((handle, stop)) = &self.nats {
            stop.cancel();
            if tokio::time::timeout(Duration::from_secs(30), handle.stopped())
                .await
                .is_err()
            {
                tracing::warn!("The NATS server side did not stop in time.");
            }
        }
    }
}

/// Wires a process of a split topology before its modules start: the transports to the
/// modules hosted elsewhere, where events go, and the registry (main) or its directory (the
/// others). The NATS server side and the routes are added once the modules have started.
pub(crate) async fn wire_split(
    bus: &Bus,
    topology: Arc<TopologyConfig>,
    here: BTreeSet<&'static str>,
    peers: Arc<dyn Peers>,
) -> anyhow::Result<Split> {
    let known: Vec<&'static str> = all_modules().iter().map(|m| m.name()).collect();
    let instance_id = Uuid::now_v7().to_string();
    let (registry, directory) = if topology.is_main() {
        let registry = Arc::new(
            Registry::new(topology.clone(), known.clone()).with_arrivals(resend_on_arrival(bus)),
        );
        let checks = crate::tls::client_builder(topology.tls.as_ref())
            .map_err(|e| anyhow::anyhow!("topology.tls: {e}"))?
            .connect_timeout(Duration::from_millis(topology.http.connect_timeout_ms))
            .build()?;
        crate::registry::spawn_checks(&registry, checks, topology.health.clone());
        (Some(registry), None)
    } else {
        let directory = Arc::new(Directory::new(
            here.clone(),
            known.clone(),
            instance_id.clone(),
            resend_on_arrival(bus),
        ));
        (None, Some(directory))
    };
    let (instances, awareness): (Arc<dyn Instances>, Arc<dyn Awareness>) =
        match (&registry, &directory) {
            (Some(registry), _) => (registry.clone(), registry.clone()),
            (None, Some(directory)) => (directory.clone(), directory.clone()),
            (None, None) => unreachable!("a process has a registry or a directory"),
        };
    // The transports that push to one instance are wrapped so that events wait until every
    // module elsewhere has said what it subscribes to.
    let pushed = |transport: Arc<dyn Transport>| {
        Arc::new(PushedEvents {
            transport,
            awareness: awareness.clone(),
        }) as Arc<dyn Transport>
    };
    let subscribers: Arc<dyn Subscribers> = awareness.clone();
    // One balancer for the HTTP and gRPC adapters, so a module's calls in flight are counted
    // once whichever adapter carries them.
    let weights = match (&registry, &directory) {
        (Some(registry), _) => registry.weights(),
        (None, Some(directory)) => directory.weights(),
        (None, None) => unreachable!("a process has a registry or a directory"),
    };
    let balancer = Arc::new(topology.balancer(weights));
    let http = if topology.uses_http() {
        let transport = HttpTransport::new(
            instances.clone(),
            subscribers.clone(),
            peers.clone(),
            topology.http.transport_config(),
        )?
        .with_balance(balancer.clone())
        .with_client(
            crate::tls::client_builder(topology.tls.as_ref())
                .map_err(|e| anyhow::anyhow!("topology.tls: {e}"))?
                .connect_timeout(Duration::from_millis(
                    topology.http.connect_timeout_ms.max(1),
                ))
                .tcp_nodelay(true)
                .build()?,
        );
        Some(pushed(Arc::new(transport)))
    } else {
        None
    };
    let grpc = if topology.uses_grpc() {
        let mut transport = GrpcTransport::new(
            instances,
            subscribers,
            peers.clone(),
            topology.http.transport_config(),
        )
        .with_balance(balancer.clone());
        if let Some(tls) = &topology.tls {
            transport = transport.with_tls(
                crate::tls::grpc_client_config(&tls.ca_file)
                    .map_err(|e| anyhow::anyhow!("topology.tls: {e}"))?,
            );
        }
        Some(pushed(Arc::new(transport)))
    } else {
        None
    };
    let nats_client = if topology.uses_nats() {
        Some(nats::connect(&topology.nats.url).await?)
    } else {
        None
    };
    let nats: Option<Arc<dyn Transport>> = nats_client.clone().map(|client| {
        Arc::new(NatsTransport::new(client, topology.nats.clone())) as Arc<dyn Transport>
    });
    for module in known.iter().filter(|m| !topology.hosts(m)) {
        let kind = topology.route_to(module);
        let transport = match kind {
            TransportKind::Http => http.clone(),
            TransportKind::Grpc => grpc.clone(),
            TransportKind::Nats => nats.clone(),
        }
        .ok_or_else(|| anyhow::anyhow!("no {} transport for module {module}", kind.as_str()))?;
        bus.wiring().set_remote(module, transport);
        tracing::info!(
            module,
            transport = kind.as_str(),
            process = topology.process_of(module),
            "Module hosted elsewhere."
        );
    }
    // Events: over NATS as soon as one module is reached over NATS (each subscribing module,
    // here too, reads its JetStream consumer and nothing else); otherwise pushed to the
    // modules elsewhere that subscribe, over gRPC if some module is reached by it (every
    // process then serves it), else over HTTP; local subscribers get theirs in process.
    if let Some(nats) = nats {
        bus.wiring().forward_events_to(nats);
        for module in &here {
            bus.wiring().consume_through_transport(module);
        }
    } else if let Some(pusher) = grpc.or(http) {
        bus.wiring().forward_events_to(pusher);
    }
    let heartbeat = match directory {
        Some(directory) => Some(Arc::new(Heartbeat {
            client: crate::tls::client_builder(topology.tls.as_ref())
                .map_err(|e| anyhow::anyhow!("topology.tls: {e}"))?
                .connect_timeout(Duration::from_millis(topology.http.connect_timeout_ms))
                .build()?,
            registry_urls: topology.registry_urls(),
            peers: peers.clone(),
            directory,
            period: topology.heartbeat(),
        })),
        None => None,
    };
    Ok(Split {
        topology,
        instance_id,
        peers,
        here,
        registry,
        heartbeat,
        nats_client,
        nats: None,
    })
}

/// When a module elsewhere comes (back) into rotation, the events this process's outboxes hold
/// for it go at once rather than when their leases lapse (`bus.relay_lease_ms`).
fn resend_on_arrival(bus: &Bus) -> crate::registry::Arrivals {
    let bus = bus.clone();
    crate::registry::Arrivals::new(move || bus.resend_waiting_events())
}
