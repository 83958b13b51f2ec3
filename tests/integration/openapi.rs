//! `GET /openapi.json` describes exactly the routes the app serves (the list `routes()` registers
//! from, `wa_supervisor::http::route_list()`), and the documented security and errors match what
//! the running app does.

use std::collections::BTreeSet;

use crate::support::harness::{spawn_app, TestApp};
use crate::support::standin::StandInOptions;
use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(t: &TestApp) -> Value {
    let r = t.call("GET", "/openapi.json", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    r.json
}

/// (method, path, operation) of every documented operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                ops.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// A concrete path for a pattern, with valid ids.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{userId}", "openapi-probe")
        .replace("{slot}", "1")
}

#[actix_web::test]
async fn every_operation_has_its_own_id() {
    // Client generators name their types by operationId: two alike give one the other's types.
    let t = spawn_app(StandInOptions::default(), &[]).await;
    let doc = document(&t).await;
    let mut seen = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_default().to_owned();
        assert!(!id.is_empty(), "{method} {path} has no operationId");
        assert!(
            seen.insert(id.clone()),
            "{method} {path}: operationId {id} is used twice"
        );
    }
}

#[actix_web::test]
async fn the_document_lists_every_served_route_and_nothing_else() {
    let t = spawn_app(StandInOptions::default(), &[]).await;
    let doc = document(&t).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "wa-supervisor");

    let served: BTreeSet<(String, String)> = wa_supervisor::http::route_list()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but not documented"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not served"
    );
    assert!(served.len() >= 15, "{served:?}");

    // The list is what actix routes: each entry reaches a handler, not the default 404 / a 405.
    let unknown = t.call("GET", "/no/such/route", None).await;
    assert_eq!(unknown.json["error"], "not_found");
    for (method, path) in &served {
        let r = t.call(&method.to_uppercase(), &concrete(path), None).await;
        assert!(
            r.status != 405 && r.json["error"] != "not_found",
            "{method} {path} is not routed: {r:?}"
        );
    }
}

#[actix_web::test]
async fn documented_security_and_errors_match_the_app() {
    let t = spawn_app(StandInOptions::default(), &[]).await;
    let doc = document(&t).await;

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["stackAccessToken"]["type"], "apiKey");
    assert_eq!(schemes["stackAccessToken"]["in"], "header");
    assert_eq!(schemes["stackAccessToken"]["name"], "x-stack-access-token");
    assert_eq!(schemes["sseTicket"]["in"], "query");

    let public: BTreeSet<&str> = [
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/",
        "/console.js",
        "/console.css",
    ]
    .into();
    for (method, path, op) in operations(&doc) {
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        assert_eq!(
            secured,
            !public.contains(path.as_str()),
            "{method} {path}: security {}",
            op["security"]
        );
        let responses = op["responses"].as_object().unwrap();
        if secured {
            assert!(responses.contains_key("401"), "{method} {path}: no 401");
            assert!(responses.contains_key("403"), "{method} {path}: no 403");
            let names: BTreeSet<&str> = op["security"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|req| req.as_object().unwrap().keys().map(String::as_str))
                .collect();
            assert!(
                names.contains("bearer") && names.contains("stackAccessToken"),
                "{method} {path}: {names:?}"
            );
        }
        // What the app does without credentials agrees with the document.
        let r = t.call(&method.to_uppercase(), &concrete(&path), None).await;
        assert_eq!(r.status == 401, secured, "{method} {path}: {r:?}");
        if secured {
            assert_eq!(r.json["error"], "unauthorized");
        }
        for (status, resp) in responses {
            if status == "429" || status == "503" && path.starts_with("/api") {
                assert!(
                    resp["headers"]["Retry-After"].is_object(),
                    "{method} {path} {status}: no Retry-After"
                );
            }
            if status.starts_with('4') || status == "503" && path.starts_with("/api") {
                assert_eq!(
                    resp["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }

    let body = &doc["components"]["schemas"]["ErrorBody"];
    let required: BTreeSet<&str> = body["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["error", "message"].into());

    // Every error code of the API on the operations that can return it.
    let text = |method: &str, path: &str, status: &str| {
        doc["paths"][path][method]["responses"][status].to_string()
    };
    let session = "/api/status/{userId}/{slot}";
    assert!(text("get", session, "400").contains("invalid_user_id"));
    assert!(text("get", session, "400").contains("invalid_slot"));
    assert!(text("get", "/api/qr/{userId}/{slot}", "400").contains("bad_request"));
    assert!(text("get", session, "401").contains("unauthorized"));
    assert!(text("get", session, "403").contains("forbidden"));
    assert!(text("get", session, "404").contains("unknown_session"));
    assert!(text("get", "/api/qr/{userId}/{slot}", "409").contains("no_qr"));
    let start_429 = text("post", "/api/start/{userId}/{slot}", "429");
    assert!(start_429.contains("too_many_sessions") && start_429.contains("rate_limited"));
    assert!(start_429.contains("too_many_pending"));
    let pair = "/api/pair/{userId}/{slot}";
    assert!(text("post", pair, "400").contains("invalid_phone_number"));
    let pair_409 = text("post", pair, "409");
    assert!(pair_409.contains("already_connected") && pair_409.contains("bridge_unavailable"));
    assert!(text("post", "/api/start/{userId}/{slot}", "503").contains("unavailable"));

    // Limits from the code: the user id pattern, slots 1..=MAX_SLOTS as configured (default 10).
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["UserId"]["pattern"],
        "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
    );
    assert_eq!(schemas["Slot"]["minimum"], 1);
    assert_eq!(schemas["Slot"]["maximum"], 10);
    let states: BTreeSet<&str> = schemas["SessionState"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "starting",
            "qr",
            "pairing",
            "connected",
            "restarting",
            "stopped",
            "failed"
        ]
        .into()
    );

    // Media types.
    let qr = &doc["paths"]["/api/qr/{userId}/{slot}"]["get"];
    let formats = qr["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "format")
        .expect("format parameter")
        .to_string();
    assert!(
        formats.contains("#/components/schemas/QrFormat"),
        "{formats}"
    );
    assert_eq!(
        schemas["QrFormat"]["enum"],
        serde_json::json!(["png", "svg", "txt", "json"])
    );
    let qr_types: BTreeSet<&str> = qr["responses"]["200"]["content"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        qr_types,
        [
            "image/png",
            "image/svg+xml",
            "text/plain",
            "application/json"
        ]
        .into()
    );
    let events = &doc["paths"]["/api/events/{userId}"]["get"];
    assert!(events["responses"]["200"]["content"]["text/event-stream"].is_object());
    assert!(events["parameters"].to_string().contains("\"ticket\""));
    assert!(
        doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_object()
    );
    assert!(
        doc["paths"]["/actors"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"]
            == "#/components/schemas/RegistryInfo"
    );
    for name in [
        "Session",
        "QrView",
        "ActorInfo",
        "RegistryInfo",
        "ErrorBody",
    ] {
        assert!(schemas[name].is_object(), "schema {name} missing");
    }
    // Every reference resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let target = r.strip_prefix('#').map(|p| doc.pointer(p));
        assert!(
            matches!(target, Some(Some(v)) if v.is_object()),
            "dangling $ref {r}"
        );
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[actix_web::test]
async fn the_slot_limit_follows_max_slots() {
    let t = spawn_app(StandInOptions::default(), &["--max-slots", "3"]).await;
    let doc = document(&t).await;
    assert_eq!(doc["components"]["schemas"]["Slot"]["maximum"], 3);
}

/// examples/connections-page is typed from this document: its committed types must be what its
/// generator makes of the document as served, and the page must type-check against them. Offline:
/// the example's npm packages are the ones scripts/test.sh installed with `npm ci`.
#[actix_web::test]
async fn the_connections_page_example_type_checks_against_this_api() {
    let t = spawn_app(StandInOptions::default(), &[]).await;
    let served = reqwest::get(t.url("/openapi.json"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let spec = t.tmp.path().join("openapi.json");
    std::fs::write(&spec, &served).unwrap();

    let started = std::time::Instant::now();
    let check = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/connections-page/check.sh"
    );
    let out = tokio::process::Command::new("bash")
        .arg(check)
        .arg(&spec)
        .output()
        .await
        .expect("bash runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "check.sh took {:.1} s\n{output}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "check.sh failed ({}):\n{output}",
        out.status
    );
}
