//! The session actor against real Chromium and the stand-in WhatsApp Web page.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::harness::{key, spawn_app, uuid_like, wait_status};
use crate::support::standin::StandInOptions;
use wa_supervisor::actors::session::{GetQr, GetStatus, Logout, SessionError, Start, Stop};
use wa_supervisor::domain::SessionState;

const PHONE: &str = "4915112345678";
const LAUNCH: Duration = Duration::from_secs(30);
const QUICK: Duration = Duration::from_secs(5);

fn slow_rotation() -> StandInOptions {
    StandInOptions {
        rotation: Duration::from_secs(20),
        rotations: 6,
        ..Default::default()
    }
}

fn by() -> String {
    "test".to_owned()
}

#[actix_web::test]
async fn qr_then_scan_connects_with_the_number_and_writes_the_row() {
    let t = spawn_app(slow_rotation(), &[]).await;
    let k = key(&uuid_like(1), 1);
    let s = t.session(&k);
    let started = s
        .send(Start {
            key: k.clone(),
            by: by(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started.state, SessionState::Starting);

    let qr = wait_status(&s, &k, LAUNCH, "qr", |s| s.state == SessionState::Qr).await;
    let view = qr.qr.expect("qr state carries a payload");
    assert!(view.payload.starts_with("2@"));
    assert!(view.data_url.starts_with("data:image/png;base64,"));
    assert!(!qr.is_connected);
    let shown = s.send(GetQr { key: k.clone() }).await.unwrap().unwrap();
    assert_eq!(shown.payload, view.payload);
    // The site refuses headless browsers: the page asked as a plain Chrome.
    let agents = t.standin.user_agents();
    assert!(
        !agents.is_empty()
            && agents
                .iter()
                .all(|a| a.contains(" Chrome/") && !a.contains("Headless")),
        "{agents:?}"
    );

    t.standin.scan(&view.payload, PHONE).await.unwrap();
    let on = wait_status(&s, &k, QUICK, "connected", |s| {
        s.state == SessionState::Connected
    })
    .await;
    assert!(on.is_connected);
    assert_eq!(on.connected_number.as_deref(), Some(PHONE));
    assert!(on.qr.is_none());
    assert!(matches!(
        s.send(GetQr { key: k.clone() }).await.unwrap(),
        Err(SessionError::NoQr)
    ));

    // The row and the audit trail follow (written in order by the actor's writer).
    // The row is written before its audit entry: wait for the entry, then read both.
    let store = t.store().clone();
    let kinds = |store: wa_supervisor::store::Store, k: wa_supervisor::domain::SessionKey| async move {
        let events = store.events(&k).await.unwrap();
        events.into_iter().map(|e| e.kind).collect::<Vec<String>>()
    };
    for _ in 0..100 {
        if kinds(store.clone(), k.clone()).await.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        kinds(store.clone(), k.clone()).await,
        ["starting", "qr", "connected"]
    );
    let row = store.load_session(&k).await.unwrap().unwrap();
    assert!(row.is_connected);
    assert_eq!(row.connected_number.as_deref(), Some(PHONE));
    assert_eq!(row.state, SessionState::Connected);

    s.send(Stop {
        key: k.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    t.assert_no_browsers_left().await;
}

#[actix_web::test]
async fn rotation_is_followed_and_expired_codes_are_reloaded() {
    let t = spawn_app(
        StandInOptions {
            rotation: Duration::from_millis(600),
            rotations: 3,
            ..Default::default()
        },
        &[],
    )
    .await;
    let k = key(&uuid_like(2), 1);
    let s = t.session(&k);
    s.send(Start {
        key: k.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    wait_status(&s, &k, LAUNCH, "qr", |s| s.state == SessionState::Qr).await;

    // Watch the payloads the session reports: more than one cycle (3), so the reload button was
    // clicked; each one is what the page issued.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while seen.len() < 5 && std::time::Instant::now() < deadline {
        if let Ok(qr) = s.send(GetQr { key: k.clone() }).await.unwrap() {
            if seen.last() != Some(&qr.payload) {
                seen.push(qr.payload.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        seen.len() >= 5,
        "saw only {} payloads: {seen:?}",
        seen.len()
    );
    let issued: HashSet<String> = t.standin.issued_payloads().into_iter().collect();
    assert!(seen.iter().all(|p| issued.contains(p)));

    // The latest reported payload is scannable right now.
    let current = wait_status(&s, &k, QUICK, "a current qr", |s| {
        s.qr.as_ref()
            .is_some_and(|q| t.standin.current_payloads().contains(&q.payload))
    })
    .await;
    t.standin
        .scan(&current.qr.unwrap().payload, PHONE)
        .await
        .unwrap();
    wait_status(&s, &k, QUICK, "connected", |s| s.is_connected).await;
    s.send(Stop {
        key: k.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    t.assert_no_browsers_left().await;
}

#[actix_web::test]
async fn unlink_from_the_phone_goes_back_to_qr() {
    let t = spawn_app(slow_rotation(), &[]).await;
    let k = key(&uuid_like(3), 2);
    let s = t.session(&k);
    s.send(Start {
        key: k.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    let qr = wait_status(&s, &k, LAUNCH, "qr", |s| s.state == SessionState::Qr).await;
    t.standin
        .scan(&qr.qr.unwrap().payload, PHONE)
        .await
        .unwrap();
    wait_status(&s, &k, QUICK, "connected", |s| s.is_connected).await;

    t.standin.unlink(PHONE).await.unwrap();
    let back = wait_status(&s, &k, QUICK, "qr after unlink", |s| {
        s.state == SessionState::Qr
    })
    .await;
    assert!(!back.is_connected);
    assert!(back.connected_number.is_none());
    s.send(Stop {
        key: k.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    t.assert_no_browsers_left().await;
}

#[actix_web::test]
async fn stop_keeps_the_login_and_logout_deletes_the_profile() {
    let t = spawn_app(slow_rotation(), &[]).await;
    let k = key(&uuid_like(4), 3);
    let profile = t.sessions_dir().join(k.folder_name());
    let s = t.session(&k);
    s.send(Start {
        key: k.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    let qr = wait_status(&s, &k, LAUNCH, "qr", |s| s.state == SessionState::Qr).await;
    t.standin
        .scan(&qr.qr.unwrap().payload, PHONE)
        .await
        .unwrap();
    wait_status(&s, &k, QUICK, "connected", |s| s.is_connected).await;

    let stopped = s
        .send(Stop {
            key: k.clone(),
            by: by(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped.state, SessionState::Stopped);
    assert!(!stopped.is_connected);
    assert_eq!(
        stopped.connected_number.as_deref(),
        Some(PHONE),
        "stop keeps the number"
    );
    t.assert_no_browsers_left().await;
    assert!(profile.is_dir(), "stop keeps the profile");

    // A later start comes back linked without a scan.
    let issued_before = t.standin.issued_payloads().len();
    s.send(Start {
        key: k.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    let again = wait_status(&s, &k, LAUNCH, "connected again", |s| s.is_connected).await;
    assert_eq!(again.connected_number.as_deref(), Some(PHONE));
    assert_eq!(
        t.standin.issued_payloads().len(),
        issued_before,
        "no new QR was needed"
    );

    let out = s
        .send(Logout {
            key: k.clone(),
            by: by(),
            wake: false,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.state, SessionState::Stopped);
    assert!(out.connected_number.is_none());
    assert!(!profile.exists(), "logout deletes the profile folder");
    t.assert_no_browsers_left().await;
    let row = t.store().load_session(&k).await.unwrap().unwrap();
    assert!(!row.is_connected && row.connected_number.is_none());
}

#[actix_web::test]
async fn start_is_idempotent_and_messages_for_other_keys_are_refused() {
    let t = spawn_app(slow_rotation(), &[]).await;
    let k = key(&uuid_like(5), 1);
    let other = key(&uuid_like(6), 1);
    let s = t.session(&k);
    s.send(Start {
        key: k.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    let first = wait_status(&s, &k, LAUNCH, "qr", |s| s.state == SessionState::Qr).await;
    let again = s
        .send(Start {
            key: k.clone(),
            by: by(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.state, SessionState::Qr);
    assert_eq!(
        again.qr, first.qr,
        "a second start leaves the running browser alone"
    );
    assert_eq!(t.standin.device_count(), 1);

    for refused in [
        s.send(GetStatus { key: other.clone() })
            .await
            .unwrap()
            .map(|_| ()),
        s.send(Start {
            key: other.clone(),
            by: by(),
        })
        .await
        .unwrap()
        .map(|_| ()),
        s.send(Stop {
            key: other.clone(),
            by: by(),
        })
        .await
        .unwrap()
        .map(|_| ()),
        s.send(Logout {
            key: other.clone(),
            by: by(),
            wake: false,
        })
        .await
        .unwrap()
        .map(|_| ()),
        s.send(GetQr { key: other.clone() })
            .await
            .unwrap()
            .map(|_| ()),
    ] {
        assert!(
            matches!(refused, Err(SessionError::WrongKey { .. })),
            "{refused:?}"
        );
    }
    let still = s.send(GetStatus { key: k.clone() }).await.unwrap().unwrap();
    assert_eq!(still.state, SessionState::Qr);
    assert!(t.sessions_dir().join(k.folder_name()).is_dir());
    assert!(!t.sessions_dir().join(other.folder_name()).exists());
    s.send(Stop {
        key: k.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    t.assert_no_browsers_left().await;
}

#[actix_web::test]
async fn two_sessions_side_by_side_never_see_each_other() {
    let t = spawn_app(slow_rotation(), &[]).await;
    let (ka, kb) = (key(&uuid_like(7), 1), key(&uuid_like(8), 1));
    let (a, b) = (t.session(&ka), t.session(&kb));
    a.send(Start {
        key: ka.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    b.send(Start {
        key: kb.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    let qa = wait_status(&a, &ka, LAUNCH, "qr a", |s| s.state == SessionState::Qr).await;
    let qb = wait_status(&b, &kb, LAUNCH, "qr b", |s| s.state == SessionState::Qr).await;
    let (pa, pb) = (
        qa.qr.unwrap().payload.clone(),
        qb.qr.unwrap().payload.clone(),
    );
    assert_ne!(pa, pb);

    t.standin.scan(&pa, "4915100000001").await.unwrap();
    let on = wait_status(&a, &ka, QUICK, "a connected", |s| s.is_connected).await;
    assert_eq!(on.connected_number.as_deref(), Some("4915100000001"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sb = b
        .send(GetStatus { key: kb.clone() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sb.state, SessionState::Qr);
    assert!(sb.connected_number.is_none());
    assert_ne!(sb.qr.unwrap().payload, pa);

    t.standin.scan(&pb, "4915100000002").await.unwrap();
    let onb = wait_status(&b, &kb, QUICK, "b connected", |s| s.is_connected).await;
    assert_eq!(onb.connected_number.as_deref(), Some("4915100000002"));
    let sa = a
        .send(GetStatus { key: ka.clone() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sa.connected_number.as_deref(), Some("4915100000001"));

    // Stopping A leaves B's browser running.
    a.send(Stop {
        key: ka.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    let root = t.sessions_dir();
    assert!(
        !wa_supervisor::browser::process::pids_using_profiles(&root.join(kb.folder_name()))
            .is_empty()
    );
    let sb = b
        .send(GetStatus { key: kb.clone() })
        .await
        .unwrap()
        .unwrap();
    assert!(sb.is_connected);
    b.send(Stop {
        key: kb.clone(),
        by: by(),
    })
    .await
    .unwrap()
    .unwrap();
    t.assert_no_browsers_left().await;
}
