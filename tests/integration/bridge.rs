//! The page bridge on WA-JS with real Chromium: the stand-in `WPP` on the stand-in page (the real
//! site is out of reach), the real WA-JS file where the daemon loads it, the fallback to the DOM
//! signals, linking by phone number, and what WA-JS knows reaching the session. Plus the check of
//! every `WPP` member the bridge uses against the pinned release's type definitions.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::harness::{spawn_app, uuid_like, TestApp, LAUNCH, SERVICE_TOKEN};
use crate::support::standin::StandInOptions;
use crate::support::wpp;

const QUICK: Duration = Duration::from_secs(10);

fn slow() -> StandInOptions {
    StandInOptions {
        rotation: Duration::from_secs(20),
        rotations: 6,
        ..Default::default()
    }
}

async fn pair(t: &TestApp, user: &str, slot: u16, body: Value) -> crate::support::harness::Reply {
    let res = reqwest::Client::new()
        .post(t.url(&format!("/api/pair/{user}/{slot}")))
        .bearer_auth(SERVICE_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let json = res.json().await.unwrap_or(Value::Null);
    crate::support::harness::Reply {
        status,
        json,
        headers,
    }
}

/// Every member and event the bridge and the messaging calls use is declared by the pinned
/// WA-JS's `.d.ts` files (installed with the package by `scripts/fetch-wa-js.sh`).
#[test]
fn the_bridge_uses_only_what_the_pinned_wa_js_declares() {
    let dist = wpp::real().parent().unwrap().join("dist");
    let read = |rel: &str| {
        std::fs::read_to_string(dist.join(rel))
            .unwrap_or_else(|e| panic!("{}: {e}", dist.join(rel).display()))
    };
    let declared_in_folder = |folder: &str, name: &str| {
        let mut stack = vec![dist.join(folder)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.to_string_lossy().ends_with(".d.ts") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    if [
                        format!("export declare function {name}("),
                        format!("export declare const {name}:"),
                        format!("export declare let {name}:"),
                    ]
                    .iter()
                    .any(|d| text.contains(d.as_str()))
                    {
                        return true;
                    }
                }
            }
        }
        false
    };
    let index = read("index.d.ts");
    for member in wa_supervisor::browser::bridge::WPP_MEMBERS
        .iter()
        .chain(wa_supervisor::messaging::page::WPP_MEMBERS)
        .chain(wa_supervisor::messaging::conversation::WPP_MEMBERS)
    {
        let path: Vec<&str> = member.strip_prefix("WPP.").unwrap().split('.').collect();
        let ok = match path.as_slice() {
            ["version"] => index.contains("export declare const version: string;"),
            ["isReady"] => {
                index.contains("isReady")
                    && read("loader/index.d.ts").contains("export declare let isReady: boolean;")
            }
            ["on"] => index.contains(" on,") && declared_in_folder("eventEmitter", "on"),
            [module, name] => {
                index.contains(&format!("export * as {module} from './{module}';"))
                    && declared_in_folder(module, name)
            }
            _ => false,
        };
        assert!(
            ok,
            "{member} is not declared by WA-JS {}",
            wa_supervisor::browser::wajs::pinned_version()
        );
    }
    for event in wa_supervisor::browser::bridge::WPP_EVENTS {
        let module = event.split('.').next().unwrap();
        let events = read(&format!("{module}/events/eventTypes.d.ts"));
        assert!(
            events.contains(&format!("'{event}':")),
            "event {event} is not declared"
        );
    }
    // The shapes the bridge reads: `fullCode` of an AuthCode, `_serialized` of a Wid.
    assert!(read("conn/types.d.ts").contains("fullCode: string;"));
    assert!(read("conn/functions/getMyUserId.d.ts").contains("getMyUserId(): Wid | undefined"));
    let wid = read("whatsapp/misc/Wid.d.ts");
    assert!(wid.contains("_serialized"), "Wid has _serialized");
    // The options the messaging calls pass (src/messaging/page.rs).
    let options = read("chat/types.d.ts");
    for option in [
        "createChat?: boolean;",
        "messageId?: string | MsgKey;",
        "quotedMsg?: string | MsgKey | MsgModel;",
    ] {
        assert!(options.contains(option), "SendMessageOptions has {option}");
    }
    let file = read("chat/functions/sendFileMessage.d.ts");
    for option in [
        "caption?: string;",
        "filename?: string;",
        "mimetype?: string;",
        "isPtt?: boolean;",
        "type: 'sticker';",
        "type: 'document';",
    ] {
        assert!(file.contains(option), "sendFileMessage takes {option}");
    }
    assert!(read("chat/functions/sendCreatePollMessage.d.ts").contains("selectableCount?: number;"));
    assert!(read("chat/functions/sendReactionToMessage.d.ts")
        .contains("reaction: string | false | null"));
    // The stand-in WPP of the tests declares nothing the real one does not (its `conn`,
    // `contact` and `chat` members sit at six spaces).
    let mut standin = 0;
    for line in wpp::SCRIPT.lines() {
        let Some(rest) = line.strip_prefix("      ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if name.is_empty() || !rest[name.len()..].starts_with(':') {
            continue;
        }
        assert!(
            ["conn", "chat", "contact"]
                .iter()
                .any(|folder| declared_in_folder(folder, &name)),
            "the stand-in WPP has {name}, which WA-JS does not declare"
        );
        standin += 1;
    }
    assert!(standin >= 15, "{standin} stand-in members found");
}

/// The real WA-JS file, loaded and checked against the built-in pin; on a page that is not
/// WhatsApp Web it never becomes ready, so the session falls back to the DOM signals after
/// `PAGE_READY_TIMEOUT_SECS` — and QR linking still works.
#[actix_web::test]
async fn the_real_wa_js_loads_and_without_whatsapp_the_dom_signals_take_over() {
    let real = wpp::real();
    let t = spawn_app(
        slow(),
        &[
            "--wa-js-path",
            real.to_str().unwrap(),
            "--page-ready-timeout-secs",
            "4",
        ],
    )
    .await;
    let ready = t.call("GET", "/readyz", None).await;
    assert_eq!(
        ready.json["waJs"]["version"],
        wa_supervisor::browser::wajs::pinned_version()
    );
    assert_eq!(
        ready.json["waJs"]["sha256"],
        wa_supervisor::browser::wajs::pinned_sha256()
    );

    let user = uuid_like(0xb01);
    assert_eq!(t.start(&user, 1).await, 202);
    let s = t.wait_state(&user, 1, "qr", LAUNCH).await;
    assert_eq!(s["bridge"], "dom", "{s}");
    // Linking by phone number needs WA-JS.
    let r = pair(&t, &user, 1, json!({"phoneNumber": "4915100000101"})).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (409, Some("bridge_unavailable")),
        "{r:?}"
    );
    t.scan(&user, 1, "4915100000101").await;
    t.stop(&user, 1).await;
}

#[actix_web::test]
async fn without_a_wa_js_file_the_sessions_use_the_dom_signals() {
    let t = spawn_app(slow(), &["--wa-js-path", "/nonexistent/wppconnect-wa.js"]).await;
    assert_eq!(
        t.call("GET", "/readyz", None).await.json["waJs"],
        Value::Null
    );
    let user = uuid_like(0xb02);
    t.start(&user, 1).await;
    let s = t.wait_state(&user, 1, "qr", LAUNCH).await;
    assert_eq!(s["bridge"], "dom");
    t.stop(&user, 1).await;
}

/// Two users linking at once, one by QR code and one by pairing code, never touch each other.
#[actix_web::test]
async fn one_user_links_by_qr_another_by_pairing_code_at_the_same_time() {
    let t = spawn_app(slow(), &[]).await;
    let (a, b) = (uuid_like(0xb03), uuid_like(0xb04));
    let (phone_a, phone_b) = ("4915100000103", "4915100000104");
    let ticket = t
        .post(&format!("/api/events/{b}/ticket"), SERVICE_TOKEN)
        .await;
    let mut b_events = reqwest::Client::new()
        .get(t.url(ticket.json["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();

    let (started, paired) = tokio::join!(
        t.start(&a, 1),
        pair(&t, &b, 1, json!({"phoneNumber": format!("+{phone_b}")}))
    );
    assert_eq!(started, 202);
    assert_eq!(paired.status, 202, "{paired:?}");
    assert_eq!(paired.json["state"], "pairing");
    assert_eq!(paired.json["qr"], Value::Null);
    let code = match paired.json["pairingCode"].as_str() {
        Some(code) => code.to_owned(),
        None => t
            .wait_json(
                &format!("/api/status/{b}/1"),
                SERVICE_TOKEN,
                QUICK,
                "a code",
                |s| s["pairingCode"].is_string(),
            )
            .await["pairingCode"]
            .as_str()
            .unwrap()
            .to_owned(),
    };
    assert!(
        t.standin.issued_codes().contains(&code),
        "the code WhatsApp gave: {code}"
    );
    let a_qr = t.wait_state(&a, 1, "qr", LAUNCH).await;
    assert_eq!(a_qr["bridge"], "wa-js");
    assert_eq!(a_qr["pairingCode"], Value::Null);

    // The code works only for the number it was asked for, and only on B's device.
    assert!(t.standin.enter_code(&code, phone_a).await.is_err());
    t.standin.enter_code(&code, phone_b).await.unwrap();
    let b_on = t
        .wait_json(
            &format!("/api/status/{b}/1"),
            SERVICE_TOKEN,
            QUICK,
            "b linked",
            |s| s["isConnected"] == true,
        )
        .await;
    assert_eq!(b_on["connectedNumber"], phone_b);
    assert_eq!(b_on["pairingCode"], Value::Null);
    // A is untouched: still on its QR code; then linked by scanning, to its own number.
    let a_now = t
        .get(&format!("/api/status/{a}/1"), SERVICE_TOKEN)
        .await
        .json;
    assert_eq!(
        (a_now["state"].as_str(), &a_now["connectedNumber"]),
        (Some("qr"), &Value::Null)
    );
    t.scan(&a, 1, phone_a).await;
    let a_on = t
        .get(&format!("/api/status/{a}/1"), SERVICE_TOKEN)
        .await
        .json;
    assert_eq!(a_on["connectedNumber"], phone_a);
    assert_eq!(t.standin.linked_phones(), [phone_a, phone_b]);

    // B's stream carried B's pairing code and link, and nothing of A.
    let mut text = String::new();
    while !text.contains("\"isConnected\":true") {
        let chunk = tokio::time::timeout(QUICK, b_events.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        text.contains(&code) && text.contains("\"state\":\"pairing\""),
        "{text}"
    );
    assert!(!text.contains(&a), "{text}");

    // A linked session cannot pair again.
    let again = pair(&t, &b, 1, json!({"phoneNumber": phone_b})).await;
    assert_eq!(
        (again.status, again.json["error"].as_str()),
        (409, Some("already_connected"))
    );
    t.stop(&a, 1).await;
    t.stop(&b, 1).await;
}

#[actix_web::test]
async fn bad_pairing_requests_are_refused_without_side_effects() {
    let t = spawn_app(slow(), &[]).await;
    let user = uuid_like(0xb05);
    for body in [
        json!({"phoneNumber": "12345"}),
        json!({"phoneNumber": "49151000001x"}),
        json!({"phoneNumber": "0151000000105"}),
        json!({"phoneNumber": 4915100000105u64}),
        json!({"phone": "4915100000105"}),
        json!({}),
    ] {
        let r = pair(&t, &user, 1, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        let code = r.json["error"].as_str().unwrap();
        assert!(
            code == "invalid_phone_number" || code == "bad_request",
            "{body}: {code}"
        );
    }
    assert_eq!(
        t.get(&format!("/api/status/{user}/1"), SERVICE_TOKEN)
            .await
            .status,
        404
    );
    assert!(t.sessions_dir().read_dir().unwrap().all(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));
}

/// A logout from the phone with WhatsApp's reason; the phone offline and back; a logout through
/// the API that unlinks on WhatsApp's side first.
#[actix_web::test]
async fn what_wa_js_knows_reaches_status_events_and_the_audit_trail() {
    let t = spawn_app(slow(), &[]).await;
    let user = uuid_like(0xb06);
    let phone = "4915100000106";
    t.start(&user, 1).await;
    t.scan(&user, 1, phone).await;
    let path = format!("/api/status/{user}/1");

    t.standin.set_online(phone, false);
    let s = t
        .wait_json(&path, SERVICE_TOKEN, QUICK, "offline", |s| {
            s["online"] == false
        })
        .await;
    assert_eq!(s["state"], "connected");
    t.standin.set_online(phone, true);
    t.wait_json(&path, SERVICE_TOKEN, QUICK, "online", |s| {
        s["online"] == true
    })
    .await;

    t.standin
        .unlink_because(phone, "primary_identity_key_change")
        .await
        .unwrap();
    let s = t
        .wait_json(
            &path,
            SERVICE_TOKEN,
            QUICK,
            "a new code after the logout",
            |s| s["state"] == "qr",
        )
        .await;
    assert_eq!(s["connectedNumber"], Value::Null);
    assert!(
        s["lastError"]
            .as_str()
            .unwrap()
            .contains("primary_identity_key_change"),
        "{s}"
    );
    let events = t
        .store()
        .events(&crate::support::harness::key(&user, 1))
        .await
        .unwrap();
    let unlinked = events
        .iter()
        .find(|e| e.kind == "unlinked")
        .expect("an unlinked event");
    assert!(unlinked
        .detail
        .as_deref()
        .unwrap()
        .contains("primary_identity_key_change"));
    assert!(
        events.iter().any(|e| e.kind == "offline") && events.iter().any(|e| e.kind == "online")
    );

    // Linked again, then logged out through the API: WA-JS unlinks on WhatsApp's side first.
    t.scan(&user, 1, phone).await;
    let r = t
        .post(&format!("/api/logout/{user}/1"), SERVICE_TOKEN)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        t.standin.self_logouts().len(),
        1,
        "the device unlinked itself"
    );
    assert!(t.standin.linked_phones().is_empty());
}
