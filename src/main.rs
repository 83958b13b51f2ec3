//! `wa-supervisor`: parse settings, start logging, run the application, map failures to exit codes
//! (2: bad configuration or environment at start; 1: the server failed later).
//!
//! The process ends with `_exit`, not `exit`: `exit` runs OpenSSL's clean-up while a pool thread
//! may still be opening a TLS connection to PostgreSQL (r2d2 keeps one idle connection ready and
//! opens it in the background), and that thread then crashes on the freed locks — a refusal at
//! start ended with SIGSEGV about one time in six. Everything the process owes is written by then.

use std::io::Write;

use clap::error::ErrorKind;
use wa_supervisor::config::{Command, Settings};
use wa_supervisor::ops::commands as ops;
use wa_supervisor::startup::{Application, Ground};

/// Bad configuration or environment at start.
const EXIT_REFUSED: i32 = 2;
/// The server (or the import) failed later.
const EXIT_FAILED: i32 = 1;

async fn import(settings: Settings, dry_run: bool) -> i32 {
    let ground = match Ground::prepare(&settings).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {}", wa_supervisor::chain(&e));
            return EXIT_REFUSED;
        }
    };
    match wa_supervisor::import::import_sessions(
        &ground.sessions,
        &ground.store,
        settings.max_slots,
        dry_run,
    )
    .await
    {
        Ok(report) => {
            print!("{}", report.render(dry_run));
            0
        }
        Err(e) => {
            eprintln!("error: {}", wa_supervisor::chain(&e));
            EXIT_FAILED
        }
    }
}

/// Runs an operation (docs/operations.md): its report on stdout, or one line on stderr.
fn operation(work: impl std::future::Future<Output = Result<String, ops::Failure>>) -> i32 {
    match actix_web::rt::System::new().block_on(work) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(f) => {
            eprintln!("error: {}", f.message);
            if f.refused {
                EXIT_REFUSED
            } else {
                EXIT_FAILED
            }
        }
    }
}

fn main() {
    let code = run();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` ends the process at once; nothing runs after it (see the module doc).
    unsafe { libc::_exit(code) }
}

fn run() -> i32 {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            // One line naming the variable (value names are the env var names), no secret.
            eprintln!("{}", wa_supervisor::config::refusal_line(&e));
            return EXIT_REFUSED;
        }
    };
    env_logger::Builder::new()
        .parse_filters(&settings.rust_log)
        .format_timestamp_millis()
        .init();

    match settings.command.clone() {
        Some(Command::ImportSessions { dry_run }) => {
            return actix_web::rt::System::new().block_on(import(settings, dry_run));
        }
        Some(Command::Backup { out, encrypt_to }) => {
            return operation(ops::backup(&settings, &out, &encrypt_to));
        }
        Some(Command::Restore { from, identity }) => {
            return operation(ops::restore(&settings, &from, identity.as_deref()));
        }
        Some(Command::Purge {
            apply,
            idle_days,
            sessions,
        }) => {
            let request = wa_supervisor::ops::purge::PurgeRequest {
                apply,
                idle_days: Some(idle_days),
                sessions,
            };
            return operation(ops::purge(&settings, request));
        }
        Some(Command::Serve) | None => {}
    }

    actix_web::rt::System::new().block_on(async move {
        let app = match Application::build(settings).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("error: {}", wa_supervisor::chain(&e));
                return EXIT_REFUSED;
            }
        };
        match app.run_until_stopped().await {
            Ok(()) => 0,
            Err(e) => {
                log::error!("server failed: {e}");
                EXIT_FAILED
            }
        }
    })
}
