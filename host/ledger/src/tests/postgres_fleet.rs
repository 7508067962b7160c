//! The shared ledger's fleet coordination (`postgres/fleet.rs`): reconciliation claims that
//! split a backlog between hosts and expire with a dead claimer, the one forwarding lease and
//! its position, and the hosts' registrations (live, then gone).

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::*;

fn host(database: &gatehouse_pg_cluster::Database, name: &str) -> PostgresLedger {
    let mut options = postgres_options(database);
    options.instance_id = name.into();
    options.max_connections = 2;
    PostgresLedger::connect(&options).expect("connects")
}

const HOLD: Duration = Duration::from_secs(60);

#[test]
fn hosts_claiming_one_backlog_at_once_split_it_and_never_share_an_entry() {
    let database = gatehouse_pg_cluster::shared().create_database();
    let hosts: Vec<Arc<PostgresLedger>> = (0..3)
        .map(|index| Arc::new(host(&database, &format!("host-{index}"))))
        .collect();
    for index in 0..60 {
        created(hosts[0].as_ref(), &format!("gh_{index:02}"));
    }
    let barrier = Arc::new(Barrier::new(hosts.len()));
    let claimers: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(index, ledger)| {
            let (ledger, barrier) = (Arc::clone(ledger), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                let pass = format!("pass-{index}");
                loop {
                    let batch = ledger
                        .claim_for_reconciliation(&pass, 4, HOLD)
                        .expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|entry| entry.id));
                }
            })
        })
        .collect();
    let claimed: Vec<Vec<String>> = claimers
        .into_iter()
        .map(|claimer| claimer.join().expect("claimer"))
        .collect();
    let mut all = BTreeSet::new();
    for ids in &claimed {
        for id in ids {
            assert!(
                all.insert(id.clone()),
                "{id} was claimed twice: {claimed:?}"
            );
        }
    }
    assert_eq!(all.len(), 60, "every entry was claimed once");
    // Claimed entries stay claimed: another host's pass that starts now finds nothing...
    let late = host(&database, "host-late");
    assert!(
        late.claim_for_reconciliation("late", 100, HOLD)
            .expect("claim")
            .is_empty()
    );
    // ...while a host's own next pass takes its own claims again, and only those.
    let again: BTreeSet<String> = hosts[1]
        .claim_for_reconciliation("pass-1-next", 100, HOLD)
        .expect("claim")
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(again, claimed[1].iter().cloned().collect::<BTreeSet<_>>());
}

#[test]
fn a_claim_expires_and_a_released_claim_is_free_at_once() {
    let database = gatehouse_pg_cluster::shared().create_database();
    let (a, b) = (host(&database, "host-a"), host(&database, "host-b"));
    created(&a, "gh_1");
    created(&a, "gh_2");
    let claimed = a
        .claim_for_reconciliation("a-1", 10, Duration::from_secs(1))
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    // One pass never claims an entry twice.
    assert!(
        a.claim_for_reconciliation("a-1", 10, HOLD)
            .expect("claim")
            .is_empty()
    );
    assert!(
        b.claim_for_reconciliation("b-1", 10, HOLD)
            .expect("claim")
            .is_empty()
    );
    // A claim given back (the pass left the entry alone) is free for the next pass.
    a.release_reconciliation_claims(&["gh_2".to_string()])
        .expect("release");
    // Another host's release of it changes nothing.
    b.release_reconciliation_claims(&["gh_1".to_string()])
        .expect("release");
    let taken: Vec<String> = b
        .claim_for_reconciliation("b-2", 10, HOLD)
        .expect("claim")
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(taken, ["gh_2"]);
    // Host A died holding gh_1: its claim lapses on the database's clock.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let taken = b.claim_for_reconciliation("b-2", 10, HOLD).expect("claim");
        if !taken.is_empty() {
            assert_eq!(taken[0].id, "gh_1");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the claim never expired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A resolved entry is never claimed.
    a.record_outcome(
        "gh_1",
        &gatehouse_plugin_api::Outcome::new(OutcomeStatus::Succeeded),
    )
    .expect("record");
    b.release_reconciliation_claims(&["gh_1".to_string(), "gh_2".to_string()])
        .expect("release");
    let left: Vec<String> = a
        .claim_for_reconciliation("a-2", 10, HOLD)
        .expect("claim")
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(left, ["gh_2"]);
}

#[test]
fn one_host_holds_the_forwarding_lease_and_the_position_survives_a_takeover() {
    let database = gatehouse_pg_cluster::shared().create_database();
    let (a, b) = (host(&database, "host-a"), host(&database, "host-b"));
    let short = Duration::from_secs(1);
    assert_eq!(
        a.take_forwarding_lease(short).expect("lease"),
        ForwardingLease::Held { position: 0 }
    );
    assert_eq!(
        b.take_forwarding_lease(short).expect("lease"),
        ForwardingLease::HeldByPeer {
            holder: "host-a".into()
        }
    );
    assert!(a.record_forwarded(7, short).expect("record"));
    // The peer cannot move the position.
    assert!(!b.record_forwarded(99, short).expect("record"));
    assert_eq!(
        a.forwarding().expect("read"),
        Some(Forwarding {
            position: 7,
            holder: Some("host-a".into()),
            holder_live: true
        })
    );
    // Host A stops renewing (killed): its lease lapses and B takes over at position 7.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let position = loop {
        if let ForwardingLease::Held { position } = b.take_forwarding_lease(short).expect("lease") {
            break position;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never lapsed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(position, 7);
    // Host A, back from a stall, finds it lost the lease and cannot record.
    assert!(!a.record_forwarded(8, short).expect("record"));
    // A position never moves back.
    assert!(b.record_forwarded(9, HOLD).expect("record"));
    assert!(b.record_forwarded(3, HOLD).expect("record"));
    assert_eq!(b.forwarding().expect("read").expect("shared").position, 9);
    // A holder that closes its ledger hands the lease over at once.
    drop(b);
    assert_eq!(
        a.take_forwarding_lease(short).expect("lease"),
        ForwardingLease::Held { position: 9 }
    );
}

#[test]
fn registered_hosts_are_listed_and_one_that_left_shows_as_gone() {
    let database = gatehouse_pg_cluster::shared().create_database();
    let (a, b) = (host(&database, "host-a"), host(&database, "host-b"));
    // A handle that never registers (a CLI run) is not part of the fleet.
    let cli = host(&database, "cli-run");
    let served = |version: &str| ServedPlugin {
        provider: "paygateglobal".into(),
        version: version.into(),
        sha256: format!("{version}-sha"),
    };
    let registration = |address: &str, version: &str| HostRegistration {
        listen_address: address.into(),
        version: "0.1.0".into(),
        plugins: vec![served(version)],
    };
    a.register_host(&registration("127.0.0.1:1", "1.0.0"))
        .expect("register");
    b.register_host(&registration("127.0.0.1:2", "1.0.0"))
        .expect("register");
    // A plugin swap re-registers.
    b.register_host(&registration("127.0.0.1:2", "1.1.0"))
        .expect("register");
    let fleet = cli.fleet().expect("read").expect("shared");
    let seen: Vec<(&str, &str, bool, &str)> = fleet
        .iter()
        .map(|host| {
            (
                host.instance_id.as_str(),
                host.listen_address.as_str(),
                host.live,
                host.plugins[0].version.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("host-a", "127.0.0.1:1", true, "1.0.0"),
            ("host-b", "127.0.0.1:2", true, "1.1.0")
        ]
    );
    assert_eq!(fleet[1].plugins[0].sha256, "1.1.0-sha");
    assert!(fleet[0].heartbeat_at_unix >= fleet[0].started_at_unix);
    // Host B leaves: kept, shown as gone.
    drop(b);
    drop(cli);
    let fleet = a.fleet().expect("read").expect("shared");
    let states: Vec<(&str, bool)> = fleet
        .iter()
        .map(|host| (host.instance_id.as_str(), host.live))
        .collect();
    assert_eq!(states, [("host-a", true), ("host-b", false)]);
    // The CLI's handle left no row at all.
    let rows: i64 = database
        .connect()
        .query_one(
            "SELECT count(*) FROM host_leases WHERE instance_id = 'cli-run'",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(rows, 0);
}
