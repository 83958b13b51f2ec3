//! Everything a bot receives (docs/media.md): the stand-in phone sends media, a location, a
//! contact, a poll vote, reactions, revokes and edits through real Chromium, the stand-in page
//! and the stand-in WPP; the bytes fetched through the signed link hash to what was sent.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::daemon;
use crate::support::harness::{eventually, spawn_app, uuid_like, TestApp, LAUNCH, SERVICE_TOKEN};
use crate::support::jwt::{TestIssuer, TokenOpts};
use crate::support::receiver::Receiver;
use crate::support::standin::{StandIn, StandInOptions};
use crate::support::wpp;

const QUICK: Duration = Duration::from_secs(20);
const SERVICE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn opts() -> StandInOptions {
    StandInOptions {
        rotation: Duration::from_secs(60),
        ..Default::default()
    }
}

fn sha(bytes: &[u8]) -> String {
    wa_supervisor::browser::wajs::sha256_hex(bytes)
}

/// `n` bytes that do not repeat within a slice.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The stored events of `user:slot` of type `kind`, as the API lists them (links fresh).
async fn events_of(t: &TestApp, user: &str, slot: u16, kind: &str) -> Vec<Value> {
    let r = t
        .get(
            &format!("/api/messages/{user}/{slot}?limit=500"),
            SERVICE_TOKEN,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["data"].clone())
        .collect()
}

/// The data of the `message` event of WhatsApp message `id`, once it is recorded.
async fn message(t: &TestApp, user: &str, id: &str) -> Value {
    eventually(QUICK, &format!("message {id} recorded"), || async {
        events_of(t, user, 1, "message")
            .await
            .into_iter()
            .find(|m| m["id"] == id)
    })
    .await
}

/// GET `url` (a path on the daemon, or absolute) with optional credentials and headers.
async fn fetch(
    t: &TestApp,
    url: &str,
    token: Option<&str>,
    range: Option<&str>,
) -> reqwest::Response {
    let url = if url.starts_with('/') {
        t.url(url)
    } else {
        url.to_owned()
    };
    let mut req = t.client.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(range) = range {
        req = req.header("range", range);
    }
    req.send().await.unwrap()
}

async fn body_of(res: reqwest::Response) -> Vec<u8> {
    res.bytes().await.unwrap().to_vec()
}

/// Every kind a phone sends becomes an event with its fields; media is stored once and fetched
/// through its link byte for byte (also a 30 MiB document, and a range); the link works without
/// other credentials, the user's own credentials work without a link, and nothing crosses to
/// another user.
#[actix_web::test]
async fn what_a_phone_sends_becomes_events_and_its_media_is_fetched_through_the_link() {
    let issuer = TestIssuer::start().await;
    let mut args = issuer.settings_args();
    args.extend(["--media-max-bytes", "64MiB"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = spawn_app(opts(), &args).await;
    let (alice, bob) = (uuid_like(0x2301), uuid_like(0x2302));
    let (alice_token, bob_token) = (
        issuer.token(&alice, TokenOpts::default()),
        issuer.token(&bob, TokenOpts::default()),
    );
    let (alice_phone, bob_phone) = ("4915100023011", "4915100023021");
    t.link(&alice, 1, alice_phone).await;
    t.link(&bob, 1, bob_phone).await;
    let customer = "4915199990023";

    // A photo, a voice note and a 30 MiB document.
    let photo = noise(200 * 1024, 1);
    let voice = noise(40 * 1024, 2);
    let document = noise(30 << 20, 3);
    let photo_id = t
        .standin
        .incoming_media(
            alice_phone,
            customer,
            "image",
            photo.clone(),
            "image/jpeg",
            None,
            Some("look"),
        )
        .unwrap();
    let voice_id = t
        .standin
        .incoming_media(
            alice_phone,
            customer,
            "ptt",
            voice.clone(),
            "audio/ogg; codecs=opus",
            None,
            None,
        )
        .unwrap();
    let doc_id = t
        .standin
        .incoming_media(
            alice_phone,
            customer,
            "document",
            document.clone(),
            "application/pdf",
            Some("menu \"2026\".pdf"),
            None,
        )
        .unwrap();
    let started = std::time::Instant::now();
    let m = message(&t, &alice, &doc_id).await;
    eprintln!("30 MiB document recorded after {:?}", started.elapsed());
    for (id, bytes, kind, mime) in [
        (&photo_id, &photo, "image", "image/jpeg"),
        (&voice_id, &voice, "ptt", "audio/ogg; codecs=opus"),
        (&doc_id, &document, "document", "application/pdf"),
    ] {
        let m = message(&t, &alice, id).await;
        assert_eq!(m["type"], kind, "{m}");
        let media = &m["media"];
        assert_eq!(media["sha256"], sha(bytes), "{m}");
        assert_eq!(media["size"], bytes.len(), "{m}");
        assert_eq!(media["mimetype"], mime, "{m}");
        assert!(media.get("error").is_none(), "{m}");
        let url = media["url"].as_str().unwrap();
        assert!(url.starts_with(&format!("/api/media/{alice}/1/")), "{url}");
        let res = fetch(&t, url, None, None).await;
        assert_eq!(res.status(), 200, "{url}");
        assert_eq!(res.headers()["content-type"], mime);
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert!(res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment"));
        assert_eq!(
            sha(&body_of(res).await),
            sha(bytes),
            "{kind} through its link"
        );
    }
    assert_eq!(message(&t, &alice, &photo_id).await["body"], "look");
    let doc = &m["media"];
    assert_eq!(doc["filename"], "menu \"2026\".pdf");
    let doc_url = doc["url"].as_str().unwrap().to_owned();
    let res = fetch(&t, &doc_url, None, Some("bytes=1048570-1048585")).await;
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 1048570-1048585/{}", document.len()).as_str()
    );
    assert_eq!(body_of(res).await, &document[1048570..1048586]);
    assert_eq!(
        fetch(
            &t,
            &doc_url,
            None,
            Some(&format!("bytes={}-", document.len()))
        )
        .await
        .status(),
        416
    );

    // The link's signature is the only credential it carries: changed, it opens nothing, and
    // the answer is the same for a media that does not exist.
    let media_id = doc["id"].as_str().unwrap();
    let tampered = doc_url.replace("signature=", "signature=0");
    assert_eq!(fetch(&t, &tampered, None, None).await.status(), 403);
    let later = doc_url.replace("expires=", "expires=9");
    assert_eq!(fetch(&t, &later, None, None).await.status(), 403);
    let other_path = doc_url.replace(
        &format!("/api/media/{alice}/"),
        &format!("/api/media/{bob}/"),
    );
    assert_eq!(
        fetch(&t, &other_path, None, None).await.status(),
        403,
        "alice's link on bob's path"
    );
    let bare = format!("/api/media/{alice}/1/{media_id}");
    assert_eq!(fetch(&t, &bare, None, None).await.status(), 401);
    let made_up = format!("/api/media/{alice}/1/{}", "0".repeat(32));
    assert_eq!(fetch(&t, &made_up, None, None).await.status(), 401);

    // The user's own credentials, without a link; another user's are refused the same way
    // whether the media exists or not.
    let own = fetch(&t, &bare, Some(&alice_token), Some("bytes=0-9")).await;
    assert_eq!(own.status(), 206);
    assert_eq!(body_of(own).await, &document[..10]);
    assert_eq!(fetch(&t, &bare, Some(&bob_token), None).await.status(), 403);
    assert_eq!(
        fetch(&t, &made_up, Some(&bob_token), None).await.status(),
        403
    );
    assert_eq!(
        fetch(&t, &made_up, Some(&alice_token), None).await.status(),
        404
    );
    let minted = t
        .post(
            &format!("/api/media/{alice}/1/{media_id}/url"),
            &alice_token,
        )
        .await;
    assert_eq!(minted.status, 200, "{minted:?}");
    let minted_url = minted.json["url"].as_str().unwrap().to_owned();
    assert_eq!(
        fetch(&t, &minted_url, None, Some("bytes=-4"))
            .await
            .status(),
        206
    );

    // Bob gets the same photo: stored once on disk, two media, each behind its own session.
    let bob_photo = t
        .standin
        .incoming_media(
            bob_phone,
            customer,
            "image",
            photo.clone(),
            "image/jpeg",
            None,
            None,
        )
        .unwrap();
    let bm = message(&t, &bob, &bob_photo).await;
    assert_eq!(bm["media"]["sha256"], sha(&photo));
    assert_ne!(
        bm["media"]["id"],
        message(&t, &alice, &photo_id).await["media"]["id"]
    );
    let bob_url = bm["media"]["url"].as_str().unwrap();
    assert!(bob_url.starts_with(&format!("/api/media/{bob}/1/")));
    let crossed = format!(
        "/api/media/{alice}/1/{}",
        bm["media"]["id"].as_str().unwrap()
    );
    assert_eq!(
        fetch(&t, &crossed, Some(SERVICE_TOKEN), None)
            .await
            .status(),
        404,
        "bob's media is not alice's"
    );
    let blobs = stored_blobs(&t.tmp.path().join("data/media"));
    assert_eq!(
        blobs.len(),
        3,
        "photo, voice note, document: the photo once {blobs:?}"
    );
    for path in &blobs {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }

    // A location, a contact, a poll the bot sent and a vote in it, a reaction, an edit, a revoke.
    let loc = t
        .standin
        .incoming_location(
            alice_phone,
            customer,
            52.52,
            13.405,
            Some("Brandenburger Tor"),
            Some("Pariser Platz, Berlin"),
        )
        .unwrap();
    let l = message(&t, &alice, &loc).await;
    assert_eq!(l["type"], "location");
    assert_eq!(
        l["location"],
        json!({"latitude": 52.52, "longitude": 13.405, "name": "Brandenburger Tor", "address": "Pariser Platz, Berlin", "url": null})
    );
    let card = "BEGIN:VCARD\nVERSION:3.0\nFN:Ada\nTEL;type=CELL:+4915111111111\nEND:VCARD";
    let vc = t
        .standin
        .incoming_vcard(alice_phone, customer, "Ada", card)
        .unwrap();
    let c = message(&t, &alice, &vc).await;
    assert_eq!(c["contacts"], json!([{"name": "Ada", "vcard": card}]));
    let sent = t
        .json(
            "POST",
            &format!("/api/messages/{alice}/1"),
            json!({"type": "poll", "to": customer, "name": "Pizza?", "options": ["yes", "no", "later"]}),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let poll_id = sent.json["id"].as_str().unwrap().to_owned();
    let p = message(&t, &alice, &poll_id).await;
    assert_eq!(p["poll"]["options"], json!(["yes", "no", "later"]));
    t.standin
        .vote(alice_phone, customer, &poll_id, &[0, 2])
        .unwrap();
    let reaction = t
        .standin
        .react(alice_phone, customer, &photo_id, Some("👍"))
        .unwrap();
    t.standin
        .edit(alice_phone, customer, &loc, "at the gate")
        .unwrap();
    t.standin.revoke(alice_phone, customer, &vc).unwrap();
    let vote = eventually(QUICK, "the vote", || async {
        events_of(&t, &alice, 1, "poll.vote").await.pop()
    })
    .await;
    assert_eq!(vote["messageId"], poll_id);
    assert_eq!(vote["voter"], format!("{customer}@c.us"));
    assert_eq!(
        vote["options"],
        json!([{"id": 0, "name": "yes"}, {"id": 2, "name": "later"}])
    );
    let r = eventually(QUICK, "the reaction", || async {
        events_of(&t, &alice, 1, "message.reaction").await.pop()
    })
    .await;
    assert_eq!(
        (
            r["id"].as_str(),
            r["messageId"].as_str(),
            r["emoji"].as_str()
        ),
        (Some(reaction.as_str()), Some(photo_id.as_str()), Some("👍"))
    );
    assert_eq!(r["from"], format!("{customer}@c.us"));
    let e = eventually(QUICK, "the edit", || async {
        events_of(&t, &alice, 1, "message.edited").await.pop()
    })
    .await;
    assert_eq!(
        (e["messageId"].as_str(), e["body"].as_str()),
        (Some(loc.as_str()), Some("at the gate"))
    );
    assert_eq!(
        e["chatId"],
        format!("{customer}@c.us"),
        "the chat, not this device"
    );
    let v = eventually(QUICK, "the revoke", || async {
        events_of(&t, &alice, 1, "message.revoked").await.pop()
    })
    .await;
    assert_eq!(v["messageId"], vc);
    assert_eq!(v["userId"], alice.as_str());
    // Each once, in the order the phone sent them; none on bob's session.
    let all: Vec<String> = t
        .get(&format!("/api/messages/{alice}/1?limit=500"), SERVICE_TOKEN)
        .await
        .json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .filter(|k| k.starts_with("message.") && k != "message.ack" || k == "poll.vote")
        .collect();
    assert_eq!(
        all,
        [
            "poll.vote",
            "message.reaction",
            "message.edited",
            "message.revoked"
        ]
    );
    for kind in [
        "poll.vote",
        "message.reaction",
        "message.edited",
        "message.revoked",
    ] {
        assert!(
            events_of(&t, &bob, 1, kind).await.is_empty(),
            "{kind} on bob's session"
        );
    }

    // Per state, never per user.
    let metrics = t
        .text("/metrics", crate::support::harness::ADMIN_TOKEN)
        .await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("wa_media_items{state=\"stored\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(line, "wa_media_items{state=\"stored\"} 4");
    assert!(!metrics.contains(&alice), "no user in the metrics");
    t.stop(&alice, 1).await;
    t.stop(&bob, 1).await;
    t.assert_no_browsers_left().await;
}

/// The content files under `dir` (`ab/abcdef…`).
fn stored_blobs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for folder in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if folder.file_name().len() == 2 && folder.path().is_dir() {
            out.extend(
                std::fs::read_dir(folder.path())
                    .unwrap()
                    .flatten()
                    .map(|f| f.path()),
            );
        }
    }
    out.sort();
    out
}

/// A download that fails still writes the event, with `media.error`; `POST …/retry` stores it
/// and a `message.media` event follows. A link past its `MEDIA_URL_TTL_SECS` opens nothing.
/// The quota removes the oldest delivered media first, and a media that finds nothing to remove
/// is recorded with `media.error: "quota"`.
#[actix_web::test]
async fn failed_downloads_are_retried_links_expire_and_the_quota_holds() {
    let service = Receiver::start().await;
    let url = service.url("/service");
    let t = spawn_app(
        opts(),
        &[
            "--media-url-ttl-secs",
            "2",
            "--media-quota-bytes-per-user",
            "300KiB",
            "--webhook-allow-http",
            "--webhook-url",
            &url,
            "--webhook-secret",
            SERVICE_SECRET,
            "--webhook-retry-schedule",
            "100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms",
        ],
    )
    .await;
    let user = uuid_like(0x2311);
    let phone = "4915100023111";
    t.link(&user, 1, phone).await;
    let customer = "4915199990231";

    // Fails once, then stored on retry.
    t.standin.fail_downloads(1);
    let first = noise(100 * 1024, 11);
    let id = t
        .standin
        .incoming_media(
            phone,
            customer,
            "image",
            first.clone(),
            "image/png",
            None,
            None,
        )
        .unwrap();
    let m = message(&t, &user, &id).await;
    let error = m["media"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{m}"));
    assert!(error.contains("download failed"), "{error}");
    assert!(
        m["media"].get("url").is_none() && m["media"].get("sha256").is_none(),
        "{m}"
    );
    let media_id = m["media"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/media/{user}/1/{media_id}");
    assert_eq!(
        fetch(&t, &path, Some(SERVICE_TOKEN), None).await.status(),
        404
    );
    let r = t.post(&format!("{path}/retry"), SERVICE_TOKEN).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["media"]["sha256"], sha(&first));
    let again = t.post(&format!("{path}/retry"), SERVICE_TOKEN).await;
    assert_eq!(again.status, 200, "a stored media answers as it is");
    let stored = eventually(QUICK, "message.media", || async {
        events_of(&t, &user, 1, "message.media").await.pop()
    })
    .await;
    assert_eq!(stored["messageId"], id);
    assert_eq!(stored["chatId"], format!("{customer}@c.us"));
    assert_eq!(stored["media"]["sha256"], sha(&first));
    assert_eq!(
        events_of(&t, &user, 1, "message.media").await.len(),
        1,
        "once"
    );
    let link = r.json["media"]["url"].as_str().unwrap().to_owned();
    assert_eq!(
        sha(&body_of(fetch(&t, &link, None, None).await).await),
        sha(&first)
    );
    // The service webhook got the event with a link of its own.
    service
        .wait(QUICK, "message.media delivered", |got| {
            got.iter().any(|r| r.body.contains("\"message.media\""))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(fetch(&t, &link, None, None).await.status(), 403, "expired");
    // A fresh link from the listing works again.
    let fresh = events_of(&t, &user, 1, "message.media")
        .await
        .pop()
        .unwrap();
    let fresh = fresh["media"]["url"].as_str().unwrap();
    assert_eq!(fetch(&t, fresh, None, None).await.status(), 200);

    // Quota 300 KiB: a second 150 KiB fits; a third removes the first (delivered); with the
    // receiver down, a fourth finds nothing it may remove.
    let second = noise(150 * 1024, 12);
    let id2 = t
        .standin
        .incoming_media(
            phone,
            customer,
            "document",
            second.clone(),
            "application/pdf",
            Some("a.pdf"),
            None,
        )
        .unwrap();
    assert_eq!(
        message(&t, &user, &id2).await["media"]["sha256"],
        sha(&second)
    );
    eventually(QUICK, "the second delivered", || async {
        service
            .received()
            .iter()
            .any(|r| r.status == 200 && r.body.contains(&id2))
            .then_some(())
    })
    .await;
    let third = noise(150 * 1024, 13);
    let id3 = t
        .standin
        .incoming_media(
            phone,
            customer,
            "document",
            third.clone(),
            "application/pdf",
            Some("b.pdf"),
            None,
        )
        .unwrap();
    assert_eq!(
        message(&t, &user, &id3).await["media"]["sha256"],
        sha(&third)
    );
    let r = fetch(&t, &path, Some(SERVICE_TOKEN), None).await;
    assert_eq!(r.status(), 410, "the oldest delivered media made room");
    service.always(Some(503));
    let fourth = noise(200 * 1024, 14);
    let id4 = t
        .standin
        .incoming_media(
            phone,
            customer,
            "document",
            fourth,
            "application/pdf",
            Some("c.pdf"),
            None,
        )
        .unwrap();
    let m4 = message(&t, &user, &id4).await;
    // The third's delivery is done, the second's too: they go first; then nothing is left.
    let m4_error = m4["media"]["error"].as_str();
    let m4_stored = m4["media"]["sha256"].is_string();
    assert!(m4_stored || m4_error == Some("quota"), "{m4}");
    let fifth = noise(250 * 1024, 15);
    let id5 = t
        .standin
        .incoming_media(
            phone,
            customer,
            "document",
            fifth,
            "application/pdf",
            Some("d.pdf"),
            None,
        )
        .unwrap();
    let m5 = message(&t, &user, &id5).await;
    assert_eq!(m5["media"]["error"], "quota", "{m5}");
    service.always(None);
    t.stop(&user, 1).await;
    t.assert_no_browsers_left().await;
}

/// A SIGKILL after a media was stored and before its event was written leaves neither half:
/// the next start's sweep deletes the content no event names, gap filling finds the message in
/// the page's own store, stores it again and records it once, with its media.
#[actix_web::test]
async fn a_sigkill_between_storing_a_media_and_its_event_leaves_neither_half() {
    let standin = StandIn::start(opts()).await;
    let tmp = tempfile::tempdir().unwrap();
    let (wpp_path, wpp_sha) = wpp::install(tmp.path());
    let args = [
        "--wa-js-path",
        wpp_path.to_str().unwrap(),
        "--wa-js-sha256",
        &wpp_sha,
    ];
    let mut d = daemon::start(tmp.path(), &standin.url(), &args).await;
    let user = uuid_like(0x2321);
    let phone = "4915100023211";
    d.call("POST", &format!("/api/start/{user}/1"), SERVICE_TOKEN)
        .await;
    let s = d.wait_state(&user, 1, LAUNCH, |s| s["state"] == "qr").await;
    standin
        .scan(s["qr"]["payload"].as_str().unwrap(), phone)
        .await
        .unwrap();
    d.wait_state(&user, 1, LAUNCH, |s| s["isConnected"] == true)
        .await;
    // Let the fresh login reach the disk (docs/nothing-lost.md).
    tokio::time::sleep(Duration::from_secs(10)).await;

    // The database is held by another writer: the daemon stores the media, then its writes
    // wait; it is killed right then.
    let db = tmp.path().join("data/wa-supervisor.db");
    let lock = hold_sqlite(&db);
    let photo = noise(300 * 1024, 21);
    let id = standin
        .incoming_media(
            phone,
            "4915199990232",
            "image",
            photo.clone(),
            "image/jpeg",
            None,
            None,
        )
        .unwrap();
    let media = tmp.path().join("data/media");
    eventually(QUICK, "the content stored", || async {
        (stored_blobs(&media).len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.signal(libc::SIGKILL);
    d.wait_exit(QUICK).await;
    drop(lock);
    assert_eq!(stored_blobs(&media).len(), 1, "the half left behind");

    let d2 = daemon::start(tmp.path(), &standin.url(), &args).await;
    d2.wait_state(&user, 1, LAUNCH, |s| s["isConnected"] == true)
        .await;
    let found = eventually(QUICK, "the message recorded", || async {
        let (_, page) = d2
            .call(
                "GET",
                &format!("/api/messages/{user}/1?limit=500"),
                SERVICE_TOKEN,
            )
            .await;
        let found: Vec<Value> = page["events"]
            .as_array()?
            .iter()
            .filter(|e| e["type"] == "message" && e["data"]["id"] == id.as_str())
            .map(|e| e["data"].clone())
            .collect();
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["backfill"], true);
    assert_eq!(found[0]["media"]["sha256"], sha(&photo));
    let blobs = stored_blobs(&media);
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert_eq!(blobs[0].file_name().unwrap().to_str().unwrap(), sha(&photo));
    assert_eq!(
        std::fs::read_dir(media.join("tmp")).map_or(0, |d| d.count()),
        0,
        "no download left half-way"
    );
    assert!(
        d2.log_text().contains("media: swept 1 contents"),
        "the sweep removed the half: {}",
        d2.log_text()
    );
    d2.call("POST", &format!("/api/stop/{user}/1"), SERVICE_TOKEN)
        .await;
}

/// Holds SQLite's write lock on `db` (as another writer would) until dropped.
fn hold_sqlite(db: &std::path::Path) -> diesel::SqliteConnection {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut conn = diesel::SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE;")
        .unwrap();
    conn
}
