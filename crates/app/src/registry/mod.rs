//! The registry: which instances of each module are up, and where.
//!
//! The main process keeps it ([`Registry`]). Every other process registers itself at start
//! (`POST /api/v1/services/register` on main's internal listener, with its identity), sends the same registration
//! again every `topology.heartbeat_ms` (its heartbeat; the answer is the current [`Listing`],
//! which it keeps in its [`Directory`]) and leaves on a graceful shutdown
//! (`DELETE /api/v1/services/{instance_id}`). An instance not heard from for
//! `topology.instance_ttl_ms` is `stale`: it leaves rotation (no bus call, event or proxied
//! request goes to it) until it heartbeats again; after ten times that it is forgotten.
//! Main also checks each instance's `/health` itself (`starting` until a check passes,
//! `unhealthy` after failed checks in a row), ejects one whose proxied requests keep failing
//! (`ejected`, for longer each time, never the last in rotation), and marks one that leaves
//! `stopping`: only `healthy` instances are in rotation (see `health`).
//!
//! `GET /api/v1/services` lists every module with its instances, each with its transport,
//! base URL, last heartbeat and health, and main's route breaker of the module; an admin's
//! token on the public port, a process's on the internal one.
//!
//! What a module subscribes to travels with its registration, so a process publishing an
//! event over HTTP knows which modules elsewhere want it. Until the subscriptions of every
//! module elsewhere are known (one of them has no instance registered yet), [`PushedEvents`]
//! refuses to forward events: they stay in the publisher's outbox and its relay sends them
//! again, so a module that starts late still gets every event it subscribes to.

//!
//! # Layout
//! - `table`: [`Registry`], the table of instances on the main process.
//! - `directory`: [`Directory`], the listing the other processes route by.
//! - `events`: [`PushedEvents`], events pushed (over HTTP or gRPC) once every subscriber is known.
//! - `routes`: the registry's endpoints (`/api/v1/services`).
//! - `heartbeat`: [`Heartbeat`], registering, heartbeating and leaving.
//! - `health`: an instance's `Probe` (health checks with hysteresis, outlier ejection).
//! - `arrivals`: [`Arrivals`], what is done when a module elsewhere comes (back) into rotation.

mod arrivals;
mod directory;
mod events;
mod health;
mod heartbeat;
mod routes;
mod table;

pub(crate) use arrivals::Arrivals;
pub(crate) use directory::Directory;
pub(crate) use events::{Awareness, PushedEvents};
pub(crate) use heartbeat::Heartbeat;
pub(crate) use routes::{RegistryState, internal_routes, public_routes};
pub(crate) use table::{Registry, spawn_checks};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::topology::TransportKind;

/// Where the registry's routes live.
pub const SERVICES_PATH: &str = "/api/v1/services";

/// How an instance's modules are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceTransport {
    /// The main process's own modules: in process for the gateway.
    InProcess,
    Http,
    Grpc,
    Nats,
}

impl From<TransportKind> for InstanceTransport {
    fn from(kind: TransportKind) -> Self {
        match kind {
            TransportKind::Http => InstanceTransport::Http,
            TransportKind::Grpc => InstanceTransport::Grpc,
            TransportKind::Nats => InstanceTransport::Nats,
        }
    }
}

/// What a process says about itself when it registers (and at every heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Unique per running process; chosen by it at start.
    pub instance_id: String,
    /// Its process name (`--process`).
    pub process: String,
    /// Where it serves its public `/api/v1/...` routes (main's gateway proxies there).
    pub base_url: String,
    /// Its internal listener (the bus's `/bus/v1/...`).
    pub bus_url: String,
    /// Where it serves `/metrics`, when it does.
    #[serde(default)]
    pub metrics_url: Option<String>,
    /// Its share of its modules' calls under the `weighted` balance rule (`topology.weight`,
    /// 1 to 100).
    #[serde(default = "one")]
    pub weight: u32,
    /// The modules it hosts.
    pub modules: Vec<RegisteredModule>,
}

fn one() -> u32 {
    1
}

/// One hosted module of a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisteredModule {
    pub name: String,
    pub transport: InstanceTransport,
    /// The event subjects the module subscribes to.
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

/// `GET /api/v1/services`: every module, where it runs, and its instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub modules: BTreeMap<String, ModuleListing>,
}

impl Listing {
    /// What several mains list, as one: every instance any of them lists (the first main's
    /// view of one listed by several), and the subscriptions any of them knows.
    pub fn union(listings: impl IntoIterator<Item = Listing>) -> Listing {
        let mut union = Listing::default();
        for listing in listings {
            for (name, module) in listing.modules {
                match union.modules.get_mut(&name) {
                    None => {
                        union.modules.insert(name, module);
                    }
                    Some(known) => {
                        for instance in module.instances {
                            if !known
                                .instances
                                .iter()
                                .any(|i| i.instance_id == instance.instance_id)
                            {
                                known.instances.push(instance);
                            }
                        }
                        if known.subscriptions.is_none() {
                            known.subscriptions = module.subscriptions;
                        }
                    }
                }
            }
        }
        union
    }
}

/// One module in the [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleListing {
    /// The process the topology places it in.
    pub process: String,
    /// How it is reached: `in_process` (the main process's), `http`, `grpc` or `nats`.
    pub transport: InstanceTransport,
    /// The event subjects it subscribes to; `null` until an instance has registered.
    pub subscriptions: Option<Vec<String>>,
    pub instances: Vec<InstanceView>,
    /// Main's route breaker of the module: `closed`, `open` or `half_open`.
    #[serde(default)]
    pub breaker: Option<banyan_bus::policy::BreakerState>,
}

/// One instance of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub instance_id: String,
    pub process: String,
    pub base_url: String,
    pub bus_url: String,
    /// Where it serves `/metrics`, when it does.
    #[serde(default)]
    pub metrics_url: Option<String>,
    pub transport: InstanceTransport,
    /// Its share under the `weighted` balance rule.
    #[serde(default = "one")]
    pub weight: u32,
    /// Milliseconds since the epoch.
    pub registered_at_ms: i64,
    /// Milliseconds since the epoch.
    pub last_heartbeat_ms: i64,
    pub health: Health,
}

/// Whether an instance is in rotation: only `healthy` ones are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Registered, not yet through its first health checks.
    Starting,
    /// Heard from within `topology.instance_ttl_ms`, and answering its health checks.
    Healthy,
    /// Failing its health checks (`topology.health.unhealthy_after` in a row).
    Unhealthy,
    /// Out of rotation for a while: its proxied requests kept failing.
    Ejected,
    /// It said it is stopping (SIGTERM): draining, out of rotation.
    Stopping,
    /// Not heard from within `topology.instance_ttl_ms`.
    Stale,
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, sync::Arc, time::Duration};

    use banyan_bus::http::{Instances, Subscribers};

    use super::{table::Refused, *};
    use crate::topology::{MAIN, Placement, TopologyConfig};

    fn topology() -> Arc<TopologyConfig> {
        let mut topology = TopologyConfig::default();
        topology.modules.insert(
            "payments".into(),
            Placement {
                process: "payments".into(),
                transport: TransportKind::Http,
                balance: Default::default(),
            },
        );
        topology.instance_ttl_ms = 50;
        topology.heartbeat_ms = 10;
        Arc::new(topology)
    }

    fn payments(id: &str, url: &str) -> Registration {
        Registration {
            instance_id: id.into(),
            process: "payments".into(),
            base_url: url.into(),
            bus_url: format!("{url}0"),
            metrics_url: None,
            weight: 1,
            modules: vec![RegisteredModule {
                name: "payments".into(),
                transport: InstanceTransport::Http,
                subscriptions: vec!["orders.order_placed.v1".into()],
            }],
        }
    }

    #[test]
    fn the_union_of_several_mains_listings_holds_every_instance_once() {
        let registry = |ids: &[&str]| {
            let registry = Registry::new(topology(), vec!["orders", "payments"]);
            for id in ids {
                registry
                    .register(payments(id, &format!("http://{id}:1")))
                    .unwrap();
            }
            registry.listing()
        };
        let ids = |listing: &Listing| -> BTreeSet<String> {
            listing.modules["payments"]
                .instances
                .iter()
                .map(|i| i.instance_id.clone())
                .collect()
        };
        let union = Listing::union([registry(&["a"]), registry(&["a", "b"]), Listing::default()]);
        assert_eq!(ids(&union), BTreeSet::from(["a".into(), "b".into()]));
        assert!(union.modules["payments"].subscriptions.is_some());
        assert_eq!(Listing::union([]), Listing::default());
    }

    #[test]
    fn instances_are_healthy_until_silent() {
        let registry = Registry::new(topology(), vec!["orders", "payments"]);
        assert_eq!(registry.unknown(), ["payments"]);
        assert!(registry.modules_for("orders.order_placed.v1").is_empty());
        registry.register(payments("a", "http://a:1")).unwrap();
        assert!(registry.unknown().is_empty());
        registry.register(payments("b", "http://b:1")).unwrap();
        assert_eq!(registry.modules_for("orders.order_placed.v1"), ["payments"]);
        assert!(registry.modules_for("orders.whatever.v1").is_empty());
        assert!(
            registry.healthy("payments").is_empty(),
            "starting: not yet checked"
        );
        for (id, _) in registry.to_check() {
            registry.checked(&id, true);
        }
        let healthy: BTreeSet<String> = registry.healthy("payments").into_iter().collect();
        assert_eq!(healthy.len(), 2, "{healthy:?}");

        std::thread::sleep(Duration::from_millis(80));
        registry.register(payments("b", "http://b:1")).unwrap();
        assert_eq!(registry.healthy("payments"), ["http://b:1"]);
        assert_eq!(
            registry.instances("payments"),
            ["http://b:10"],
            "the bus's listener"
        );
        let listing = registry.listing();
        let health: Vec<Health> = listing.modules["payments"]
            .instances
            .iter()
            .map(|i| i.health)
            .collect();
        assert_eq!(health, [Health::Stale, Health::Healthy]);
        assert!(registry.remove("payments", "b"));
        assert!(registry.healthy("payments").is_empty());
        assert_eq!(
            registry.listing().modules["payments"].instances[1].health,
            Health::Stopping
        );
        // What payments wants is remembered when its instances are gone.
        assert!(registry.unknown().is_empty());
        assert_eq!(registry.modules_for("orders.order_placed.v1"), ["payments"]);
    }

    #[test]
    fn failed_checks_and_failing_requests_take_an_instance_out_of_rotation_but_never_the_last() {
        let registry = Registry::new(topology(), vec!["orders", "payments"]);
        registry.register(payments("a", "http://a:1")).unwrap();
        registry.register(payments("b", "http://b:1")).unwrap();
        let check_all = |passed: &dyn Fn(&str) -> bool| {
            for (id, _) in registry.to_check() {
                registry.checked(&id, passed(&id));
            }
        };
        check_all(&|_| true);
        assert_eq!(registry.healthy("payments").len(), 2);
        // Two failed checks in a row (topology.health.unhealthy_after).
        check_all(&|id| id != "a");
        assert_eq!(registry.healthy("payments").len(), 2, "one is not enough");
        check_all(&|id| id != "a");
        assert_eq!(registry.healthy("payments"), ["http://b:1"]);
        check_all(&|_| true);
        assert_eq!(registry.healthy("payments").len(), 2, "back after a pass");
        // Five failed proxied requests in a row eject b...
        for _ in 0..5 {
            registry.proxied("http://b:1", false);
        }
        assert_eq!(registry.healthy("payments"), ["http://a:1"]);
        let listing = registry.listing();
        assert_eq!(
            listing.modules["payments"].instances[1].health,
            Health::Ejected
        );
        // ...but a, now the last in rotation, is never ejected.
        for _ in 0..20 {
            registry.proxied("http://a:1", false);
        }
        assert_eq!(registry.healthy("payments"), ["http://a:1"]);
    }

    #[test]
    fn a_module_of_another_process_is_refused() {
        let registry = Registry::new(topology(), vec!["orders", "payments"]);
        let mut wrong = payments("a", "http://a:1");
        wrong.modules[0].name = "orders".into();
        assert!(matches!(
            registry.register(wrong),
            Err(Refused::Conflict(_))
        ));
        let mut wrong = payments("a", "not a url");
        wrong.modules.clear();
        assert!(matches!(
            registry.register(wrong),
            Err(Refused::Invalid("base_url", _))
        ));
    }

    #[test]
    fn a_directory_follows_the_listing() {
        let registry = Registry::new(topology(), vec!["orders", "payments"]);
        registry.register_own(Registration {
            instance_id: "main".into(),
            process: MAIN.into(),
            base_url: "http://main:1".into(),
            bus_url: "http://main:2".into(),
            metrics_url: None,
            weight: 1,
            modules: vec![RegisteredModule {
                name: "orders".into(),
                transport: InstanceTransport::InProcess,
                subscriptions: vec!["payments.payment_completed.v1".into()],
            }],
        });
        let directory = Directory::new(
            ["payments"].into_iter().collect(),
            vec!["orders", "payments"],
            "me".into(),
            Arrivals::default(),
        );
        // Nothing known yet: events wait.
        assert_eq!(directory.unknown(), ["orders"]);
        assert!(directory.instances("orders").is_empty());
        directory.update(registry.listing());
        assert!(directory.unknown().is_empty());
        assert!(
            directory
                .modules_for("payments.payment_failed.v1")
                .is_empty()
        );
        assert_eq!(
            directory.modules_for("payments.payment_completed.v1"),
            ["orders"]
        );
        assert_eq!(
            directory.instances("orders"),
            ["http://main:2"],
            "the bus's listener"
        );
    }
}
