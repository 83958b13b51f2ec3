//! Everything a bot sends (docs/messaging.md): every `type` end to end through real Chromium,
//! the stand-in page and the stand-in WPP, the bytes the recipient's phone got hashed against
//! what was sent; media by URL (served here) and base64; voice notes transcoded; replies,
//! reactions and `@lid` chats; every refusal with its code and nothing sent.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::harness::{eventually, spawn_app, uuid_like, Reply, TestApp, SERVICE_TOKEN};
use crate::support::jwt::{TestIssuer, TokenOpts};
use crate::support::standin::{SentMessage, StandInOptions};

fn opts() -> StandInOptions {
    StandInOptions {
        rotation: Duration::from_secs(60),
        ..Default::default()
    }
}

fn sha(bytes: &[u8]) -> String {
    wa_supervisor::browser::wajs::sha256_hex(bytes)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A real PNG of `w`×`h` noise.
fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x as u8) ^ seed, (y as u8).wrapping_mul(seed), seed])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A PDF-looking document of `n` bytes.
fn pdf(n: usize, seed: u8) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend((0..n.saturating_sub(9)).map(|i| (i as u8).wrapping_mul(31) ^ seed));
    bytes
}

/// One second of a 440 Hz tone as MP3 (ffmpeg, which the set-up installs).
fn mp3() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tone.mp3");
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .args([
            "sine=frequency=440:duration=1:sample_rate=44100",
            "-ac",
            "2",
            "-c:a",
            "libmp3lame",
        ])
        .arg(&out)
        .status()
        .expect("ffmpeg runs (scripts/setup.sh installs it)");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

async fn send_as(t: &TestApp, user: &str, token: &str, body: Value) -> Reply {
    t.json_as("POST", &format!("/api/messages/{user}/1"), token, body)
        .await
}

async fn send(t: &TestApp, user: &str, body: Value) -> Reply {
    send_as(t, user, SERVICE_TOKEN, body).await
}

/// The message the phone got for the answer `r` (201).
fn received(t: &TestApp, r: &Reply) -> SentMessage {
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json["id"].as_str().unwrap();
    t.standin
        .sent()
        .into_iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("no message {id} reached the phone"))
}

/// Files served on loopback for `media.url`: `/menu.pdf`, `/photo.png` (whose content type
/// says JPEG), `/moved` (a redirect), `/huge` (larger than the cap, no length announced).
async fn file_server(menu: Vec<u8>, photo: Vec<u8>) -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let server = HttpServer::new(move || {
        let (menu, photo) = (menu.clone(), photo.clone());
        App::new()
            .route(
                "/menu.pdf",
                web::get().to(move || {
                    let menu = menu.clone();
                    async move {
                        HttpResponse::Ok()
                            .content_type("application/pdf")
                            .body(menu)
                    }
                }),
            )
            .route(
                "/photo.png",
                web::get().to(move || {
                    let photo = photo.clone();
                    async move { HttpResponse::Ok().content_type("image/jpeg").body(photo) }
                }),
            )
            .route(
                "/moved",
                web::get().to(|| async {
                    HttpResponse::Found()
                        .insert_header(("location", "/menu.pdf"))
                        .finish()
                }),
            )
            .route(
                "/huge",
                web::get().to(|| async {
                    let chunk = web::Bytes::from(vec![b'%'; 256 * 1024]);
                    let body = futures_util::stream::iter(
                        (0..64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                    );
                    HttpResponse::Ok().streaming(body)
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (format!("http://127.0.0.1:{port}"), handle)
}

/// Every type, end to end: what the phone gets is what was sent — the same bytes, the type
/// WhatsApp gives it, the fields, the quoted message, the chat (also an `@lid` one).
#[actix_web::test]
async fn every_type_reaches_the_phone_as_it_was_sent() {
    let t = spawn_app(
        opts(),
        &["--webhook-allow-http", "--media-max-bytes", "8MiB"],
    )
    .await;
    let user = uuid_like(0x2201);
    let phone = "4915100022011";
    t.link(&user, 1, phone).await;
    let customer = "4915199990022";
    let question = t
        .standin
        .incoming(phone, customer, "what's on the menu?")
        .unwrap();
    let lid = "203458712345678@lid";
    let from_lid = t
        .standin
        .incoming(phone, lid, "and from a linked id")
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the questions recorded",
        || async {
            let r = t
                .get(&format!("/api/messages/{user}/1"), SERVICE_TOKEN)
                .await;
            let n = r.json["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "message")
                .count();
            (n >= 2).then_some(())
        },
    )
    .await;
    let menu = pdf(300 * 1024, 7);
    let photo = png(64, 48, 3);
    let (base, server) = file_server(menu.clone(), photo.clone()).await;

    // A text as a reply.
    let r = send(
        &t,
        &user,
        json!({"to": customer, "text": "pizza", "replyTo": question}),
    )
    .await;
    let m = received(&t, &r);
    assert_eq!((m.kind.as_str(), m.body.as_str()), ("chat", "pizza"));
    assert_eq!(m.extra["quoted"], question.as_str());

    // An image as base64, with a caption.
    let r = send(
        &t,
        &user,
        json!({"type": "image", "to": customer, "media": {"data": b64(&photo)}, "caption": "today"}),
    )
    .await;
    let m = received(&t, &r);
    assert_eq!((m.kind.as_str(), m.body.as_str()), ("image", "today"));
    assert_eq!(sha(&m.media_bytes(&t.standin).unwrap()), sha(&photo));
    assert_eq!(m.extra["media"]["mimetype"], "image/png");

    // A document by URL, fetched by the daemon (the service token is trusted like WEBHOOK_URL);
    // more than one slice into the page.
    let r = send(
        &t,
        &user,
        json!({"type": "document", "to": customer, "media": {"url": format!("{base}/menu.pdf"), "filename": "menu.pdf"}, "replyTo": question}),
    )
    .await;
    let m = received(&t, &r);
    assert_eq!(m.kind, "document");
    assert_eq!(sha(&m.media_bytes(&t.standin).unwrap()), sha(&menu));
    assert_eq!(m.extra["media"]["filename"], "menu.pdf");
    assert_eq!(m.extra["media"]["mimetype"], "application/pdf");
    assert_eq!(m.extra["quoted"], question.as_str());

    // A served file whose content type lies: the bytes decide (a PNG is an image).
    let r = send(
        &t,
        &user,
        json!({"type": "sticker", "to": customer, "media": {"url": format!("{base}/photo.png")}}),
    )
    .await;
    let m = received(&t, &r);
    assert_eq!(
        (m.kind.as_str(), &m.extra["media"]["mimetype"]),
        ("sticker", &json!("image/png"))
    );

    // A voice note from an MP3 arrives as Ogg/Opus, mono, 16 kHz, push-to-talk.
    let r = send(
        &t,
        &user,
        json!({"type": "voice", "to": customer, "media": {"data": b64(&mp3())}}),
    )
    .await;
    let m = received(&t, &r);
    assert_eq!((m.kind.as_str(), &m.extra["isPtt"]), ("ptt", &json!(true)));
    let ogg = m.media_bytes(&t.standin).unwrap();
    assert_eq!(&ogg[..4], b"OggS");
    assert_eq!(&ogg[28..36], b"OpusHead");
    assert_eq!(ogg[37], 1, "mono");
    assert_eq!(u32::from_le_bytes(ogg[40..44].try_into().unwrap()), 16_000);
    assert!(m.extra["media"]["mimetype"]
        .as_str()
        .unwrap()
        .starts_with("audio/ogg"));

    // Location, contact (a card WhatsApp makes, and a vCard as given), poll.
    let r = send(
        &t,
        &user,
        json!({"type": "location", "to": customer, "lat": 52.52, "lng": 13.405, "name": "Trattoria", "address": "Hauptstr. 1"}),
    )
    .await;
    let m = received(&t, &r);
    assert_eq!(
        (
            m.kind.as_str(),
            &m.extra["lat"],
            &m.extra["lng"],
            &m.extra["name"]
        ),
        (
            "location",
            &json!(52.52),
            &json!(13.405),
            &json!("Trattoria")
        )
    );
    let r = send(
        &t,
        &user,
        json!({"type": "contact", "to": customer, "name": "Chef", "phone": "+4915100000009"}),
    )
    .await;
    let m = received(&t, &r);
    assert_eq!(m.kind, "vcard");
    assert_eq!(
        m.extra["contacts"],
        json!([{"id": "4915100000009@c.us", "name": "Chef"}])
    );
    let vcard =
        "BEGIN:VCARD\nVERSION:3.0\nFN:Delivery desk\nTEL;type=CELL:+4915100000010\nEND:VCARD";
    let r = send(
        &t,
        &user,
        json!({"type": "contact", "to": customer, "vcard": vcard}),
    )
    .await;
    let m = received(&t, &r);
    assert_eq!((m.kind.as_str(), m.body.as_str()), ("vcard", vcard));
    assert_eq!(m.extra["raw"]["vcardFormattedName"], "Delivery desk");
    let r = send(
        &t,
        &user,
        json!({"type": "poll", "to": customer, "name": "Which pizza?", "options": ["Margherita", "Diavola", "Funghi"], "selectable": 2}),
    )
    .await;
    let m = received(&t, &r);
    assert_eq!(
        (m.kind.as_str(), m.body.as_str()),
        ("poll_creation", "Which pizza?")
    );
    assert_eq!(
        m.extra["choices"],
        json!(["Margherita", "Diavola", "Funghi"])
    );
    assert_eq!(m.extra["selectableCount"], 2);

    // A reaction on the customer's question, then its removal; the answer names the message.
    let r = send(
        &t,
        &user,
        json!({"type": "reaction", "to": customer, "messageId": question, "emoji": "👍"}),
    )
    .await;
    assert_eq!((r.status, &r.json["id"]), (201, &json!(question)), "{r:?}");
    let r = send(
        &t,
        &user,
        json!({"type": "reaction", "to": customer, "messageId": question, "emoji": ""}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let reactions: Vec<Value> = t
        .standin
        .sent()
        .into_iter()
        .filter(|m| m.kind == "reaction")
        .map(|m| json!([m.extra["msgId"], m.extra["reaction"]]))
        .collect();
    assert_eq!(
        reactions,
        [json!([question, "👍"]), json!([question, null])]
    );

    // A reply to a linked id goes to that chat as it came.
    let r = send(
        &t,
        &user,
        json!({"to": lid, "text": "hello, linked id", "replyTo": from_lid}),
    )
    .await;
    let m = received(&t, &r);
    assert_eq!((m.to.as_str(), &m.extra["quoted"]), (lid, &json!(from_lid)));

    server.stop(false).await;
    t.stop(&user, 1).await;
    t.assert_no_browsers_left().await;
}

/// Every refusal answers its code, and nothing reaches the phone: too large (base64, by URL
/// without a length), a redirect, a URL a user's token may not reach, a declared type the bytes
/// contradict, an undecodable voice note, a field the type does not take, an unknown type.
#[actix_web::test]
async fn every_refusal_has_its_code_and_sends_nothing() {
    let issuer = TestIssuer::start().await;
    let mut args = issuer.settings_args();
    args.extend(["--webhook-allow-http", "--media-max-bytes", "1MiB"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = spawn_app(opts(), &args).await;
    let user = uuid_like(0x2202);
    let token = issuer.token(&user, TokenOpts::default());
    t.link(&user, 1, "4915100022021").await;
    let to = "4915199990023";
    let (base, server) = file_server(pdf(4096, 1), png(8, 8, 1)).await;
    let jpeg = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0\x01\x01".to_vec();
    for (who, body, status, code) in [
        (
            SERVICE_TOKEN,
            json!({"type": "document", "to": to, "media": {"data": b64(&vec![1u8; 1024 * 1024 + 1])}}),
            413,
            "media_too_large",
        ),
        (
            SERVICE_TOKEN,
            json!({"type": "document", "to": to, "media": {"url": format!("{base}/huge")}}),
            413,
            "media_too_large",
        ),
        (
            SERVICE_TOKEN,
            json!({"type": "document", "to": to, "media": {"url": format!("{base}/moved")}}),
            422,
            "media_unavailable",
        ),
        (
            SERVICE_TOKEN,
            json!({"type": "document", "to": to, "media": {"url": format!("{base}/nothing-here")}}),
            422,
            "media_unavailable",
        ),
        (
            token.as_str(),
            json!({"type": "document", "to": to, "media": {"url": format!("{base}/menu.pdf")}}),
            400,
            "bad_request",
        ),
        (
            SERVICE_TOKEN,
            json!({"type": "image", "to": to, "media": {"data": b64(&jpeg), "mimetype": "image/png"}}),
            422,
            "unsupported_media",
        ),
        (
            SERVICE_TOKEN,
            json!({"type": "image", "to": to, "media": {"data": b64(&pdf(100, 2))}}),
            422,
            "unsupported_media",
        ),
        (
            SERVICE_TOKEN,
            json!({"type": "voice", "to": to, "media": {"data": b64(b"certainly not audio at all")}}),
            422,
            "unsupported_media",
        ),
        (
            SERVICE_TOKEN,
            json!({"type": "voice", "to": to, "media": {"data": b64(&mp3())}, "caption": "no"}),
            400,
            "bad_request",
        ),
        (
            SERVICE_TOKEN,
            json!({"type": "image", "to": to, "media": {"data": "not base64!"}}),
            400,
            "bad_request",
        ),
        (
            SERVICE_TOKEN,
            json!({"type": "image", "to": to, "media": {"data": "AA==", "url": format!("{base}/menu.pdf")}}),
            400,
            "bad_request",
        ),
        (
            SERVICE_TOKEN,
            json!({"type": "fax", "to": to}),
            400,
            "bad_request",
        ),
        (
            SERVICE_TOKEN,
            json!({"type": "location", "to": to, "lat": 120, "lng": 0}),
            400,
            "bad_request",
        ),
        (
            SERVICE_TOKEN,
            json!({"to": "abc@lid", "text": "hi"}),
            400,
            "bad_request",
        ),
        // WhatsApp Web cannot find the quoted message: it refuses, nothing is sent.
        (
            SERVICE_TOKEN,
            json!({"to": to, "text": "quoting nothing", "replyTo": "false_1@c.us_NOPE"}),
            502,
            "send_failed",
        ),
    ] {
        let r = send_as(&t, &user, who, body.clone()).await;
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (status, Some(code)),
            "{body}: {r:?}"
        );
        assert!(
            r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{r:?}"
        );
    }
    assert_eq!(t.standin.sent(), [], "nothing reached the phone");
    // The user's own token sends media it gives as data.
    let r = send_as(
        &t,
        &user,
        &token,
        json!({"type": "image", "to": to, "media": {"data": b64(&png(8, 8, 9))}}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    server.stop(false).await;
    t.stop(&user, 1).await;
    t.assert_no_browsers_left().await;
}

/// A 50 MiB document goes through the page in slices and arrives whole; two users sending
/// media at the same time each reach their own recipient with their own file.
#[actix_web::test]
async fn large_documents_arrive_whole_and_two_users_files_never_cross() {
    let t = spawn_app(opts(), &[]).await;
    let (a, b) = (uuid_like(0x2203), uuid_like(0x2204));
    t.link(&a, 1, "4915100022031").await;
    t.link(&b, 1, "4915100022041").await;
    let big = pdf(50 * 1024 * 1024, 5);
    let r = send(
        &t,
        &a,
        json!({"type": "document", "to": "4915199990031", "media": {"data": b64(&big), "filename": "catalogue.pdf"}}),
    )
    .await;
    let m = received(&t, &r);
    let got = m.media_bytes(&t.standin).unwrap();
    assert_eq!((got.len(), sha(&got)), (big.len(), sha(&big)));
    drop((big, got));
    // Under MEDIA_MAX_BYTES but over WhatsApp's own limit for images: its refusal, with the
    // reason, and nothing sent.
    let sent_before = t.standin.sent().len();
    let mut huge = b"\x89PNG\r\n\x1a\n".to_vec();
    huge.resize(17 << 20, 1);
    let r = send(
        &t,
        &a,
        json!({"type": "image", "to": "4915199990031", "media": {"data": b64(&huge)}}),
    )
    .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (422, Some("media_refused")),
        "{r:?}"
    );
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("file_too_large"),
        "{r:?}"
    );
    assert_eq!(t.standin.sent().len(), sent_before);

    let (pa, pb) = (png(200, 150, 11), png(200, 150, 22));
    let (ra, rb) = tokio::join!(
        send(
            &t,
            &a,
            json!({"type": "image", "to": "4915199990032", "media": {"data": b64(&pa)}})
        ),
        send(
            &t,
            &b,
            json!({"type": "image", "to": "4915199990042", "media": {"data": b64(&pb)}})
        ),
    );
    let (ma, mb) = (received(&t, &ra), received(&t, &rb));
    assert_eq!(
        (ma.from.as_deref(), ma.to.as_str()),
        (Some("4915100022031"), "4915199990032@c.us")
    );
    assert_eq!(
        (mb.from.as_deref(), mb.to.as_str()),
        (Some("4915100022041"), "4915199990042@c.us")
    );
    assert_eq!(sha(&ma.media_bytes(&t.standin).unwrap()), sha(&pa));
    assert_eq!(sha(&mb.media_bytes(&t.standin).unwrap()), sha(&pb));
    t.stop(&a, 1).await;
    t.stop(&b, 1).await;
    t.assert_no_browsers_left().await;
}

/// Around the conversation: read, presence, a number check (with its linked id), chats and
/// history from the page; `phone` on events of an `@lid` chat; another user's token refused;
/// the calls share the session's `SEND_PER_MINUTE` with sends.
#[actix_web::test]
async fn read_presence_number_checks_chats_and_history_go_through_the_page() {
    let issuer = TestIssuer::start().await;
    let mut args = issuer.settings_args();
    args.extend(["--send-per-minute", "20"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = spawn_app(opts(), &args).await;
    let (user, other) = (uuid_like(0x2205), uuid_like(0x2206));
    let phone = "4915100022051";
    t.link(&user, 1, phone).await;
    let (customer, hidden, lid) = ("4915199990051", "4915199990052", "203458799990052@lid");
    t.standin.add_contact(hidden, Some(lid));
    let first = t.standin.incoming(phone, customer, "first").unwrap();
    // A second later: WhatsApp orders a chat by its messages' seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    t.standin.incoming(phone, customer, "second").unwrap();
    t.standin.incoming(phone, lid, "from a linked id").unwrap();
    let events = eventually(Duration::from_secs(10), "three messages", || async {
        let r = t
            .get(&format!("/api/messages/{user}/1"), SERVICE_TOKEN)
            .await;
        let msgs: Vec<Value> = r.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "message")
            .map(|e| e["data"].clone())
            .collect();
        (msgs.len() == 3).then_some(msgs)
    })
    .await;
    let phone_of = |body: &str| events.iter().find(|m| m["body"] == body).unwrap()["phone"].clone();
    assert_eq!(phone_of("first"), customer);
    assert_eq!(
        phone_of("from a linked id"),
        hidden,
        "the phone behind the @lid"
    );
    let chat = format!("{customer}@c.us");

    let base = format!("/api/chats/{user}/1/{chat}");
    assert_eq!(
        t.json("POST", &format!("{base}/read"), json!({}))
            .await
            .status,
        204
    );
    let r = t
        .json(
            "POST",
            &format!("{base}/presence"),
            json!({"state": "typing"}),
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = t
        .json(
            "POST",
            &format!("{base}/presence"),
            json!({"state": "dancing"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("bad_request"))
    );
    assert_eq!(
        t.standin.presence(),
        [
            (phone.to_owned(), chat.clone(), "read".to_owned()),
            (phone.to_owned(), chat.clone(), "typing".to_owned())
        ]
    );

    let r = t
        .get(&format!("/api/contacts/{user}/1/+{hidden}"), SERVICE_TOKEN)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json,
        json!({"exists": true, "chatId": format!("{hidden}@c.us"), "lid": lid, "phone": hidden})
    );
    let r = t
        .get(
            &format!("/api/contacts/{user}/1/4915199990099"),
            SERVICE_TOKEN,
        )
        .await;
    assert_eq!((r.status, &r.json["exists"]), (200, &json!(false)));
    let r = t
        .get(&format!("/api/contacts/{user}/1/12ab"), SERVICE_TOKEN)
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("invalid_phone_number"))
    );

    let r = t.get(&format!("/api/chats/{user}/1"), SERVICE_TOKEN).await;
    assert_eq!(r.status, 200, "{r:?}");
    let ids: Vec<&str> = r.json["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&chat.as_str()) && ids.contains(&lid),
        "{ids:?}"
    );
    let r = t.get(&format!("{base}/messages"), SERVICE_TOKEN).await;
    let bodies: Vec<&str> = r.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["first", "second"]);
    let second = r.json["messages"][1]["id"].as_str().unwrap().to_owned();
    let r = t
        .get(
            &format!("{base}/messages?before={second}&limit=5"),
            SERVICE_TOKEN,
        )
        .await;
    assert_eq!(r.json["messages"].as_array().unwrap().len(), 1, "{r:?}");
    assert_eq!(r.json["messages"][0]["id"], first.as_str());
    let r = t
        .get(&format!("{base}/messages?limit=0"), SERVICE_TOKEN)
        .await;
    assert_eq!(r.status, 400);
    let r = t
        .get(
            &format!("/api/chats/{user}/1/not-a-chat/messages"),
            SERVICE_TOKEN,
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("bad_request"))
    );

    // Another user's token: 403 on every one, nothing shown.
    let theirs = issuer.token(&other, TokenOpts::default());
    for (method, path) in [
        ("GET", format!("/api/chats/{user}/1")),
        ("GET", format!("{base}/messages")),
        ("POST", format!("{base}/read")),
        ("GET", format!("/api/contacts/{user}/1/{hidden}")),
    ] {
        let r = t.call(method, &path, Some(&theirs)).await;
        assert_eq!(r.status, 403, "{method} {path}: {r:?}");
    }
    // A session that is not linked.
    let r = t.get(&format!("/api/chats/{other}/1"), SERVICE_TOKEN).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(t.standin.presence().len(), 2);

    // The session's budget is shared with sends: it runs out.
    let mut limited = None;
    for _ in 0..30 {
        let r = t
            .get(&format!("/api/contacts/{user}/1/{hidden}"), SERVICE_TOKEN)
            .await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("429 within the budget");
    assert_eq!(r.json["error"], "rate_limited");
    let r = send(&t, &user, json!({"to": customer, "text": "over budget"})).await;
    assert_eq!(r.status, 429, "{r:?}");
    t.stop(&user, 1).await;
    t.assert_no_browsers_left().await;
}
