//! The simulator over real HTTP on loopback, checked against the document (seed 000).

use std::time::Duration;

use gatehouse_sim_paysitecash::{
    AUTH_ERROR, PaysiteCashSimulator, SYSTEM_ERROR, SimState, TOO_MANY_LOGIN_ATTEMPTS, WRONG_MONTH,
    WRONG_YEAR,
};

const USER: &str = "webmaster42";
const PASSWORD: &str = "s3cret-Passw0rd";
/// md5("s3cret-Passw0rd").
const PASSWORD_MD5: &str = "9e1f5e2980bd3ae5ac8c595611aefc6a";

async fn get(base: &str, script: &str, query: &[(&str, &str)]) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{base}/{script}"))
        .query(query)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn good(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut query = vec![("user", USER), ("pass", PASSWORD_MD5)];
    query.extend_from_slice(extra);
    query
}

#[tokio::test]
async fn every_script_answers_semicolon_statistics_with_a_header() {
    let (sim, running) = PaysiteCashSimulator::start(USER, PASSWORD)
        .await
        .expect("start");
    let base = PaysiteCashSimulator::stats_base_url(&running);
    for script in [
        "webmasters.php",
        "webmasters_quick.php",
        "affiliates.php",
        "affiliates_quick.php",
    ] {
        let (status, body) = get(&base, script, &good(&[])).await;
        assert_eq!(status, 200);
        let mut lines = body.lines();
        assert!(lines.next().expect("header").starts_with("date;"), "{body}");
        assert!(lines.count() >= 1, "{script}: {body}");
    }
    let (_, body) = get(
        &base,
        "webmasters_month.php",
        &good(&[("month", "02"), ("year", "2028")]),
    )
    .await;
    assert_eq!(body.lines().count(), 1 + 29, "leap February: {body}");
    assert!(body.contains("2028-02-29;"));
    let (_, body) = get(
        &base,
        "affiliates_month.php",
        &good(&[("month", "04"), ("year", "2026")]),
    )
    .await;
    assert_eq!(body.lines().count(), 1 + 30);
    assert_eq!(sim.call_count(), 6);
    assert_eq!(sim.failed_logins(), 0);
}

#[tokio::test]
async fn wrong_credentials_answer_auth_error_and_lock_after_more_than_three() {
    let (sim, running) = PaysiteCashSimulator::start(USER, PASSWORD)
        .await
        .expect("start");
    let base = PaysiteCashSimulator::stats_base_url(&running);
    // The clear password, an upper-case md5 and a wrong user are all refused.
    for query in [
        vec![("user", USER), ("pass", PASSWORD)],
        vec![("user", USER), ("pass", "9E1F5E2980BD3AE5AC8C595611AEFC6A")],
        vec![("user", "someone"), ("pass", PASSWORD_MD5)],
        vec![("user", USER)],
    ] {
        assert_eq!(
            get(&base, "webmasters.php", &query).await,
            (200, AUTH_ERROR.to_string())
        );
    }
    assert_eq!(sim.failed_logins(), 4);
    assert!(sim.is_locked());
    // Locked: even the right password is refused.
    assert_eq!(
        get(&base, "affiliates.php", &good(&[])).await,
        (200, TOO_MANY_LOGIN_ATTEMPTS.to_string())
    );
    // After five minutes the window is clear again.
    sim.advance(Duration::from_secs(301));
    assert!(!sim.is_locked());
    let (_, body) = get(&base, "affiliates.php", &good(&[])).await;
    assert!(body.starts_with("date;"), "{body}");
    assert_eq!(sim.failed_logins_total(), 4);
}

#[tokio::test]
async fn three_failures_do_not_lock() {
    let (sim, running) = PaysiteCashSimulator::start(USER, PASSWORD)
        .await
        .expect("start");
    let base = PaysiteCashSimulator::stats_base_url(&running);
    for _ in 0..3 {
        get(&base, "webmasters.php", &[("user", USER), ("pass", "x")]).await;
    }
    assert!(!sim.is_locked());
    let (_, body) = get(&base, "webmasters.php", &good(&[])).await;
    assert!(body.starts_with("date;"));
}

#[tokio::test]
async fn monthly_apis_check_year_then_month() {
    let (_sim, running) = PaysiteCashSimulator::start(USER, PASSWORD)
        .await
        .expect("start");
    let base = PaysiteCashSimulator::stats_base_url(&running);
    for (month, year, expected) in [
        ("13", "2026", WRONG_MONTH),
        ("3", "2026", WRONG_MONTH),
        ("00", "2026", WRONG_MONTH),
        ("03", "26", WRONG_YEAR),
        ("03", "20x6", WRONG_YEAR),
        ("13", "26", WRONG_YEAR),
    ] {
        for script in ["webmasters_month.php", "affiliates_month.php"] {
            let (status, body) =
                get(&base, script, &good(&[("month", month), ("year", year)])).await;
            assert_eq!(
                (status, body.as_str()),
                (200, expected),
                "{script} {month}/{year}"
            );
        }
    }
    let (_, body) = get(&base, "webmasters_month.php", &good(&[])).await;
    assert_eq!(body, WRONG_YEAR);
    // Non-monthly scripts ignore month and year.
    let (_, body) = get(&base, "webmasters.php", &good(&[("month", "99")])).await;
    assert!(body.starts_with("date;"));
}

#[tokio::test]
async fn system_errors_floods_and_overrides_are_controllable_over_http() {
    let (sim, running) = PaysiteCashSimulator::start(USER, PASSWORD)
        .await
        .expect("start");
    let base = PaysiteCashSimulator::stats_base_url(&running);
    let root = running.base_url();
    let client = reqwest::Client::new();

    let sent = client
        .post(format!("{root}/_sim/system-errors"))
        .json(&serde_json::json!({"count": 1}))
        .send()
        .await
        .expect("control");
    assert_eq!(sent.status().as_u16(), 204);
    assert_eq!(
        get(&base, "webmasters.php", &good(&[])).await.1,
        SYSTEM_ERROR
    );
    assert!(
        get(&base, "webmasters.php", &good(&[]))
            .await
            .1
            .starts_with("date;")
    );

    client
        .post(format!("{root}/_sim/min-interval"))
        .json(&serde_json::json!({"millis": 60_000}))
        .send()
        .await
        .expect("control");
    assert!(
        get(&base, "webmasters.php", &good(&[]))
            .await
            .1
            .starts_with("date;")
    );
    assert_eq!(
        get(&base, "webmasters.php", &good(&[])).await.1,
        TOO_MANY_LOGIN_ATTEMPTS
    );
    client
        .post(format!("{root}/_sim/min-interval"))
        .json(&serde_json::json!({"millis": null}))
        .send()
        .await
        .expect("control");

    client
        .put(format!("{root}/_sim/statistics/affiliates_quick.php"))
        .body("<html>maintenance</html>")
        .send()
        .await
        .expect("control");
    assert_eq!(
        get(&base, "affiliates_quick.php", &good(&[])).await.1,
        "<html>maintenance</html>"
    );
    client
        .delete(format!("{root}/_sim/statistics/affiliates_quick.php"))
        .send()
        .await
        .expect("control");
    assert!(
        get(&base, "affiliates_quick.php", &good(&[]))
            .await
            .1
            .starts_with("date;")
    );

    get(
        &base,
        "webmasters.php",
        &[("user", USER), ("pass", "wrong")],
    )
    .await;
    let state: SimState = client
        .get(format!("{root}/_sim/state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("state JSON");
    assert_eq!(state.failed_logins, 1);
    assert!(!state.locked);
    assert_eq!(state.flood_refusals, 1);
    assert_eq!(state.calls.get("webmasters.php"), Some(&5));
    assert_eq!(state.total_calls, 7);
    assert_eq!(sim.state(), state);

    client
        .post(format!("{root}/_sim/reset-lock"))
        .send()
        .await
        .expect("reset");
    client
        .post(format!("{root}/_sim/advance"))
        .json(&serde_json::json!({"seconds": 10}))
        .send()
        .await
        .expect("advance");
    assert_eq!(sim.failed_logins(), 0);

    let (status, _) = get(&base, "other.php", &good(&[])).await;
    assert_eq!(status, 404);
}
