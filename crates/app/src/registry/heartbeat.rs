//! A process's side of the registry: registering, heartbeating, leaving.
//!
//! With several mains (`topology.registry_url` lists each one's internal listener), a process
//! registers with every one of them at every heartbeat: each main then knows every instance
//! without sharing any state with the others (the registry is soft state, rebuilt from
//! heartbeats within a TTL), and the process routes by the union of the listings of the mains
//! that answered. See ADR 0010.

use std::{sync::Arc, time::Duration};

use banyan_bus::http::Peers;
use tokio_util::sync::CancellationToken;

use super::{Listing, Registration, SERVICES_PATH, directory::Directory};

/// A process other than main (or a second main): registers with every main, heartbeats,
/// keeps its [`Directory`] fresh, leaves.
pub(crate) struct Heartbeat {
    pub(crate) client: reqwest::Client,
    /// Each main's internal listener.
    pub(crate) registry_urls: Vec<String>,
    pub(crate) peers: Arc<dyn Peers>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) period: Duration,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("registry_urls", &self.registry_urls)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Heartbeat {
    fn url(registry: &str, path: &str) -> String {
        format!("{}{path}", registry.trim_end_matches('/'))
    }

    /// Registers once with `registry`; it answers with its listing.
    async fn beat(&self, registry: &str, registration: &Registration) -> Result<Listing, String> {
        let response = self
            .client
            .post(Self::url(registry, &format!("{SERVICES_PATH}/register")))
            .header(reqwest::header::AUTHORIZATION, self.peers.credential())
            .json(registration)
            .timeout(self.period.max(Duration::from_secs(2)))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(format!("the registry answered {status}: {body}"));
        }
        response
            .json::<Listing>()
            .await
            .map_err(|e| format!("the registry's answer is unreadable: {e}"))
    }

    /// Heartbeats to every main until `stop` is cancelled. The directory follows the mains
    /// that answered the last beat; one that stops answering drops out of it.
    pub(crate) async fn run(self: Arc<Self>, registration: Registration, stop: CancellationToken) {
        let mut registered = vec![false; self.registry_urls.len()];
        let mut failing = vec![false; self.registry_urls.len()];
        loop {
            let answers = futures::future::join_all(
                self.registry_urls
                    .iter()
                    .map(|registry| self.beat(registry, &registration)),
            )
            .await;
            let mut listings = Vec::with_capacity(answers.len());
            for (i, answer) in answers.into_iter().enumerate() {
                let registry = &self.registry_urls[i];
                match answer {
                    Ok(listing) => {
                        if !registered[i] {
                            tracing::info!(instance_id = %registration.instance_id, %registry, "Registered with the registry.");
                        } else if failing[i] {
                            tracing::info!(%registry, "The registry answers again.");
                        }
                        registered[i] = true;
                        failing[i] = false;
                        listings.push(listing);
                    }
                    Err(error) => {
                        if !failing[i] {
                            tracing::warn!(%registry, %error, "Cannot register with the registry; retrying every heartbeat.");
                        }
                        failing[i] = true;
                    }
                }
            }
            if !listings.is_empty() {
                self.directory.update(Listing::union(listings));
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.period) => {}
            }
        }
    }

    /// Tells every main this instance leaves (graceful shutdown); gives up after 2 s.
    pub(crate) async fn leave(&self, instance_id: &str) {
        futures::future::join_all(
            self.registry_urls
                .iter()
                .map(|registry| self.leave_one(registry, instance_id)),
        )
        .await;
    }

    async fn leave_one(&self, registry: &str, instance_id: &str) {
        let sent = self
            .client
            .delete(Self::url(
                registry,
                &format!("{SERVICES_PATH}/{instance_id}"),
            ))
            .header(reqwest::header::AUTHORIZATION, self.peers.credential())
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                tracing::info!(instance_id, %registry, "Left the registry.");
            }
            Ok(response) => {
                tracing::warn!(instance_id, %registry, status = %response.status(), "The registry did not take the leave.");
            }
            Err(error) => {
                tracing::warn!(instance_id, %registry, %error, "Could not tell the registry this instance leaves.");
            }
        }
    }
}
