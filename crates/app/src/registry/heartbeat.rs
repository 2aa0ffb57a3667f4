//! A process's side of the registry: registering, heartbeating, leaving.

use std::{sync::Arc, time::Duration};

use banyan_bus::http::Peers;
use tokio_util::sync::CancellationToken;

use super::{Listing, Registration, SERVICES_PATH, directory::Directory};

/// A process other than main: registers, heartbeats, keeps its [`Directory`] fresh, leaves.
pub(crate) struct Heartbeat {
    pub(crate) client: reqwest::Client,
    pub(crate) registry_url: String,
    pub(crate) peers: Arc<dyn Peers>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) period: Duration,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("registry_url", &self.registry_url)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Heartbeat {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.registry_url.trim_end_matches('/'))
    }

    /// Registers once; the registry answers with the listing.
    async fn beat(&self, registration: &Registration) -> Result<Listing, String> {
        let response = self
            .client
            .post(self.url(&format!("{SERVICES_PATH}/register")))
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

    /// Heartbeats until `stop` is cancelled.
    pub(crate) async fn run(self: Arc<Self>, registration: Registration, stop: CancellationToken) {
        let mut registered = false;
        let mut failing = false;
        loop {
            match self.beat(&registration).await {
                Ok(listing) => {
                    self.directory.update(listing);
                    if !registered {
                        tracing::info!(instance_id = %registration.instance_id, registry = %self.registry_url, "Registered with the registry.");
                    } else if failing {
                        tracing::info!("The registry answers again.");
                    }
                    registered = true;
                    failing = false;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(registry = %self.registry_url, %error, "Cannot register with the registry; retrying every heartbeat.");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.period) => {}
            }
        }
    }

    /// Tells the registry this instance leaves (graceful shutdown); gives up after 2 s.
    pub(crate) async fn leave(&self, instance_id: &str) {
        let sent = self
            .client
            .delete(self.url(&format!("{SERVICES_PATH}/{instance_id}")))
            .header(reqwest::header::AUTHORIZATION, self.peers.credential())
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                tracing::info!(instance_id, "Left the registry.");
            }
            Ok(response) => {
                tracing::warn!(instance_id, status = %response.status(), "The registry did not take the leave.");
            }
            Err(error) => {
                tracing::warn!(instance_id, %error, "Could not tell the registry this instance leaves.");
            }
        }
    }
}
