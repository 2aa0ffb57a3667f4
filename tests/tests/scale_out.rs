//! Outgrowing one machine: what must hold once a module runs as many processes, started
//! together by a scheduler, on storage none of them has seen before.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use banyan_e2e::{
    Engine, Storage,
    cluster::{Cluster, Topology, Transport},
    test_figment,
};

/// Five payments processes started at the same moment on fresh storage, three times over:
/// each provisions (the schema and role on PostgreSQL, the file on SQLite) and migrates, or
/// finds it done, and every one of them serves. None dies of another's `CREATE`.
async fn five_processes_of_one_module_start_at_once_on_fresh_storage(engine: Engine) {
    for _ in 0..3 {
        let Some(storage) = Storage::fresh(engine).await else {
            return;
        };
        let mut topology = Topology::one("payments", Transport::Http);
        // Main only: the five come together below.
        topology.processes.clear();
        let mut cluster = Cluster::start(test_figment(&storage.url()), topology)
            .await
            .unwrap();
        cluster.start_processes_at_once("payments", 5).await;
        cluster.healthy("payments", 5).await;
        cluster.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_payments_processes_start_at_once_on_a_fresh_postgresql_database() {
    five_processes_of_one_module_start_at_once_on_fresh_storage(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_payments_processes_start_at_once_on_a_fresh_sqlite_directory() {
    five_processes_of_one_module_start_at_once_on_fresh_storage(Engine::Sqlite).await;
}
