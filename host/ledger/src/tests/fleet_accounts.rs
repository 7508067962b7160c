//! The account protection several hosts share through the PostgreSQL ledger
//! (`coordination.rs`, `postgres/accounts.rs`): one probe holder at a time across hosts, the pause
//! and the proof the holder records seen by the next, a dead holder's probe freed by its lease,
//! a resume on one host lifting the pause for every host and every credential.

use std::time::Duration;

use super::*;
use crate::coordination::{AccountCoordination, AccountKey, AccountReport, ProbeClaim};

/// Two hosts (two ledgers, two instance ids) on one fresh database, and the database.
fn two_hosts() -> (
    PostgresLedger,
    PostgresLedger,
    gatehouse_pg_cluster::Database,
) {
    let database = gatehouse_pg_cluster::shared().create_database();
    let host = |name: &str| {
        let mut options = postgres_options(&database);
        options.instance_id = name.to_string();
        PostgresLedger::connect(&options).expect("the host connects")
    };
    (host("host-a"), host("host-b"), database)
}

const ACCOUNT: AccountKey<'static> = AccountKey {
    provider: "paysitecash",
    account: "main",
    fingerprint: "fingerprint-of-the-wrong-password",
};

fn paused_for(duration: Duration) -> AccountReport {
    AccountReport {
        pause: Some(("the provider refused the credentials".into(), duration)),
        proven: false,
        release_probe: true,
    }
}

#[test]
fn one_host_holds_the_probe_and_the_next_holder_sees_the_pause_it_set() {
    let (host_a, host_b, _database) = two_hosts();
    assert_eq!(
        host_a.claim_probe(&ACCOUNT).expect("claim"),
        ProbeClaim::Claimed
    );
    assert_eq!(
        host_b.claim_probe(&ACCOUNT).expect("claim"),
        ProbeClaim::HeldElsewhere
    );
    host_a
        .report(&ACCOUNT, &paused_for(Duration::from_secs(600)))
        .expect("report");
    let ProbeClaim::Paused(pause) = host_b.claim_probe(&ACCOUNT).expect("claim") else {
        panic!("host B must see host A's pause");
    };
    assert_eq!(pause.reason, "the provider refused the credentials");
    assert!(
        (599_000..=600_000).contains(&pause.remaining_ms),
        "{pause:?}"
    );
    // The paused row stays unclaimed: nobody probes a paused account.
    assert!(matches!(
        host_a.claim_probe(&ACCOUNT).expect("claim"),
        ProbeClaim::Paused(_)
    ));
}

#[test]
fn proven_credentials_need_no_probe_and_new_credentials_start_unproven() {
    let (host_a, host_b, _database) = two_hosts();
    assert_eq!(
        host_a.claim_probe(&ACCOUNT).expect("claim"),
        ProbeClaim::Claimed
    );
    host_a
        .report(
            &ACCOUNT,
            &AccountReport {
                proven: true,
                release_probe: true,
                ..AccountReport::default()
            },
        )
        .expect("report");
    assert_eq!(
        host_b.claim_probe(&ACCOUNT).expect("claim"),
        ProbeClaim::Proven
    );
    let snapshot = host_b.snapshot().expect("snapshot");
    assert_eq!(snapshot.live_hosts, 2);
    assert!(
        snapshot
            .accounts
            .iter()
            .any(|shared| shared.fingerprint == ACCOUNT.fingerprint && shared.proven),
        "{snapshot:?}"
    );
    let rotated = AccountKey {
        fingerprint: "fingerprint-of-the-new-password",
        ..ACCOUNT
    };
    assert_eq!(
        host_b.claim_probe(&rotated).expect("claim"),
        ProbeClaim::Claimed
    );
}

#[test]
fn a_dead_holders_probe_is_free_once_its_lease_expired_not_before() {
    let (host_a, host_b, database) = two_hosts();
    assert_eq!(
        host_a.claim_probe(&ACCOUNT).expect("claim"),
        ProbeClaim::Claimed
    );
    assert_eq!(
        host_b.claim_probe(&ACCOUNT).expect("claim"),
        ProbeClaim::HeldElsewhere
    );
    // Host A stops renewing (a SIGKILL): its lease runs out.
    database
        .connect()
        .execute(
            "UPDATE host_leases SET expires_at = clock_timestamp() - interval '1 second' \
             WHERE instance_id = 'host-a'",
            &[],
        )
        .expect("expire the lease");
    assert_eq!(
        host_b.claim_probe(&ACCOUNT).expect("claim"),
        ProbeClaim::Claimed
    );
    assert_eq!(
        host_a.claim_probe(&ACCOUNT).expect("claim"),
        ProbeClaim::HeldElsewhere,
        "host B holds it now"
    );
}

#[test]
fn a_resume_on_one_host_lifts_the_pause_of_every_credential_for_every_host() {
    let (host_a, host_b, _database) = two_hosts();
    let rotated = AccountKey {
        fingerprint: "fingerprint-of-the-new-password",
        ..ACCOUNT
    };
    for key in [ACCOUNT, rotated] {
        host_a
            .report(&key, &paused_for(Duration::from_secs(600)))
            .expect("report");
    }
    let paused = host_b.snapshot().expect("snapshot");
    assert_eq!(
        paused
            .accounts
            .iter()
            .filter(|shared| shared.pause.is_some())
            .count(),
        2,
        "{paused:?}"
    );
    assert!(host_b.lift_pause("paysitecash", "main").expect("lift"));
    assert!(
        !host_b.lift_pause("paysitecash", "main").expect("lift"),
        "lifted already"
    );
    let lifted = host_a.snapshot().expect("snapshot");
    assert!(
        lifted.accounts.iter().all(|shared| shared.pause.is_none()),
        "{lifted:?}"
    );
    assert_eq!(
        host_a.claim_probe(&ACCOUNT).expect("claim"),
        ProbeClaim::Claimed
    );
}

#[test]
fn a_pause_that_ran_out_no_longer_holds() {
    let (host_a, host_b, _database) = two_hosts();
    host_a
        .report(&ACCOUNT, &paused_for(Duration::from_millis(1)))
        .expect("report");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        host_b.claim_probe(&ACCOUNT).expect("claim"),
        ProbeClaim::Claimed
    );
    assert!(host_b.snapshot().expect("snapshot").accounts.is_empty());
}
