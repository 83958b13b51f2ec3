//! Cluster figures for BENCHMARKS.md: `cargo bench --bench cluster`.
//!
//! Three real daemons on one fresh PostgreSQL database and the stand-in page, with the default
//! `LEASE_TTL_SECS` (15):
//! - PostgreSQL load at rest: transactions per second of the cluster's database over 30 s,
//!   with no session and with `BENCH_SESSIONS` (30) linked sessions (`pg_stat_database`);
//! - takeover after kill -9: from the kill to `connected` on another node, for every session
//!   of the killed node, two rounds; re-links needed (the stand-in's count of scans);
//! - drain: from the stop on the drained node to `connected` on another, per session.

#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use support::cluster::{connected_elsewhere, lease, link, median, Node, NodeOptions, PgDatabase};
use support::harness::ADMIN_TOKEN;
use support::standin::{StandIn, StandInOptions};

const TTL_SECS: u64 = 15;
/// Linked sessions (`BENCH_SESSIONS`, default 30).
fn sessions() -> usize {
    std::env::var("BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}
const REST: Duration = Duration::from_secs(30);

/// Committed and rolled back transactions of `db` so far.
async fn transactions(db: &PgDatabase) -> i64 {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let url = db.url();
    let name = db.name.clone();
    tokio::task::spawn_blocking(move || {
        // Measured from another database, so the measuring adds nothing to the count.
        let admin = url.rsplit_once('/').unwrap().0.to_owned() + "/postgres";
        let mut conn = PgConnection::establish(&admin).unwrap();
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT (xact_commit + xact_rollback)::bigint AS n FROM pg_stat_database WHERE datname = '{name}'"
        ))
        .load(&mut conn)
        .unwrap();
        rows[0].n
    })
    .await
    .unwrap()
}

async fn rate_at_rest(db: &PgDatabase) -> f64 {
    // Statistics reach pg_stat_database within a second or so of each transaction.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = transactions(db).await;
    tokio::time::sleep(REST).await;
    let after = transactions(db).await;
    (after - before) as f64 / REST.as_secs_f64()
}

#[actix_web::main]
async fn main() {
    let db = PgDatabase::create().await;
    let standin = StandIn::start(StandInOptions::default()).await;
    let opts = NodeOptions {
        lease_ttl_secs: TTL_SECS,
        ..NodeOptions::default()
    };
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(Node::start_with(&standin, &db, name, &opts).await);
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let idle = rate_at_rest(&db).await;
    println!("PostgreSQL at rest, 3 nodes, no session: {idle:.2} transactions/s");

    // Half, then all: what grows with the number of sessions, and what only with the nodes.
    let total = sessions();
    let users: Vec<String> = (0..total).map(|i| format!("bench{i}")).collect();
    for (i, user) in users.iter().enumerate() {
        let phone = format!("49151000{i:04}");
        link(&standin, &db, &nodes[0], user, 1, &phone).await;
        if i + 1 == total / 2 || i + 1 == total {
            let busy = rate_at_rest(&db).await;
            println!(
                "PostgreSQL at rest, 3 nodes, {} linked sessions: {busy:.2} transactions/s ({:+.3} per session over none)",
                i + 1,
                (busy - idle) / (i + 1) as f64
            );
        }
    }

    let links = standin.links();
    let mut takeovers = Vec::new();
    for round in 0..2 {
        let mut held = std::collections::HashMap::<String, Vec<String>>::new();
        for user in &users {
            let owner = lease(&db, user, 1).await.unwrap().0;
            held.entry(owner).or_default().push(user.clone());
        }
        let (victim, moving) = held.into_iter().max_by_key(|(_, v)| v.len()).unwrap();
        let at = nodes.iter().position(|n| n.name == victim).unwrap();
        let mut dead = nodes.remove(at);
        let killed = Instant::now();
        dead.daemon.signal(libc::SIGKILL);
        dead.daemon.wait_exit(Duration::from_secs(5)).await;
        for user in &moving {
            let limit = Duration::from_secs(TTL_SECS * 2 + 60);
            let (to, took) =
                connected_elsewhere(&db, &nodes[0], user, 1, &victim, killed, limit).await;
            println!(
                "  round {round}: {user}:1 {victim} -> {to} in {} ms",
                took.as_millis()
            );
            takeovers.push(took);
        }
        nodes.push(Node::start_with(&standin, &db, &format!("n{}", 4 + round), &opts).await);
    }
    let mut sorted = takeovers.clone();
    sorted.sort();
    println!(
        "takeover after kill -9 (LEASE_TTL_SECS {TTL_SECS}): median {} ms, min {} ms, max {} ms over {} sessions; re-links needed: {}",
        median(takeovers.clone()).as_millis(),
        sorted[0].as_millis(),
        sorted[sorted.len() - 1].as_millis(),
        takeovers.len(),
        standin.links() - links
    );

    // Drain the node that holds the most.
    let mut count = std::collections::HashMap::<String, usize>::new();
    for user in &users {
        *count
            .entry(lease(&db, user, 1).await.unwrap().0)
            .or_default() += 1;
    }
    let target = count.into_iter().max_by_key(|(_, n)| *n).unwrap().0;
    let links = standin.links();
    let started = Instant::now();
    let (status, report) = nodes[0]
        .daemon
        .call("POST", &format!("/admin/nodes/{target}/drain"), ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200, "{report}");
    let moved: Vec<u64> = report["moved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ms"].as_u64().unwrap())
        .collect();
    println!(
        "drain of {target}: {} sessions in {} ms ({:?} ms each); re-links needed: {}",
        moved.len(),
        started.elapsed().as_millis(),
        moved,
        standin.links() - links
    );
}
