//! Bad configuration stops the daemon at start: one line naming the problem, exit code 2, no
//! panic backtrace.

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wa-supervisor"));
    cmd.current_dir(tmp.path())
        .args(args)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env_remove("DATABASE_URL")
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // A setting that is wrongly accepted would leave a running daemon: give up after 20 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?} {env:?}: the daemon started instead of refusing");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_settings_exit_2_with_one_line_naming_the_variable() {
    for (env, var) in [
        (("DATABASE_URL", "mysql://db/wa"), "DATABASE_URL"),
        (("DATABASE_URL", ""), "DATABASE_URL"),
        (("MAX_SLOTS", "ten"), "MAX_SLOTS"),
        (("MAX_SLOTS", "0"), "MAX_SLOTS"),
        (("SESSIONS_DIR", "/etc/passwd/sessions"), "SESSIONS_DIR"),
        (("DATA_DIR", "/proc/version/data"), "DATA_DIR"),
        (("BIND_ADDR", "localhost"), "BIND_ADDR"),
        (("QR_TIMEOUT_SECS", "-5"), "QR_TIMEOUT_SECS"),
        (("WHATSAPP_URL", "file:///etc/passwd"), "WHATSAPP_URL"),
        (("API_TOKEN", "short"), "API_TOKEN"),
        (
            ("CORS_ORIGINS", "http://a.example, http://b.example/app"),
            "CORS_ORIGINS",
        ),
        (("MAX_PENDING_PER_USER", "0"), "MAX_PENDING_PER_USER"),
        (("CLUSTER_TOKEN", "short"), "CLUSTER_TOKEN"),
        (("NODE_ID", "node one"), "NODE_ID"),
        (("LEASE_TTL_SECS", "2"), "LEASE_TTL_SECS"),
        // Renewed every 1 s and trusted for 1 s: it flapped.
        (("LEASE_TTL_SECS", "3"), "LEASE_TTL_SECS"),
        (("BROWSER", "firefox"), "BROWSER"),
        (("CHROMIUM_PATH", "/nonexistent/chromium"), "CHROMIUM_PATH"),
        (("CHROMIUM_PATH", "/etc/passwd"), "CHROMIUM_PATH"),
        (("SESSION_MEMORY_MAX", "100MiB"), "SESSION_MEMORY_MAX"),
        (("SESSION_MEMORY_MAX", "a lot"), "SESSION_MEMORY_MAX"),
        (
            ("SESSION_MEMORY_CHECK_SECS", "0"),
            "SESSION_MEMORY_CHECK_SECS",
        ),
        // Cluster mode on the default SQLite database: nodes share one PostgreSQL.
        (
            ("CLUSTER_TOKEN", "cluster-token-0123456789"),
            "CLUSTER_TOKEN",
        ),
    ] {
        let (code, stderr) = run(&[], &[env]);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        // Log lines of what went well before may precede it; the refusal is one line.
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{env:?}: one error line, got {stderr}");
        assert!(errors[0].contains(var), "{env:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}

#[test]
fn a_wa_js_file_that_is_not_the_pinned_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("wppconnect-wa.js");
    std::fs::write(
        &file,
        "/*! wppconnect-team/wa-js v4.6.0 */ window.WPP = {}; // altered",
    )
    .unwrap();
    let (code, stderr) = run(&[], &[("WA_JS_PATH", file.to_str().unwrap())]);
    assert_eq!(code, Some(2), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        line.contains("WA_JS_PATH") && line.contains("WA_JS_SHA256="),
        "{line}"
    );
    let (code, stderr) = run(&[], &[("WA_JS_SHA256", "not-a-hash")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("WA_JS_SHA256"), "{stderr}");
}

#[test]
fn a_refused_database_url_never_shows_its_password() {
    for url in [
        "mysql://wa:hunter2-secret@db.internal/wa",
        "postgres://wa:hunter2-secret@127.0.0.1:1/wa",
    ] {
        let (code, stderr) = run(&[], &[("DATABASE_URL", url)]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("DATABASE_URL"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    }
}

#[test]
fn unwritable_sessions_dir_as_a_non_root_user_is_refused() {
    // Root can write anywhere; a read-only bind is what an operator would hit. A file in the
    // way is the portable stand-in.
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let (code, stderr) = run(&["--sessions-dir", blocker.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("error: SESSIONS_DIR")),
        "{stderr}"
    );
}

#[test]
fn help_lists_every_setting_with_its_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_wa-supervisor"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "BIND_ADDR",
        "DATABASE_URL",
        "SESSIONS_DIR",
        "CHROMIUM_PATH",
        "WHATSAPP_URL",
        "API_TOKEN",
        "ADMIN_TOKEN",
        "STACK_PROJECT_ID",
        "STACK_JWKS_URL",
        "CORS_ORIGINS",
        "MAX_SLOTS",
        "MAX_SESSIONS",
        "MAX_PENDING_PER_USER",
        "QR_TIMEOUT_SECS",
        "RUST_LOG",
    ] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} missing from --help"
        );
    }
}
