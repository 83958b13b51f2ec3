//! `wa-supervisor`: parse settings, start logging, run the application, map failures to exit codes
//! (2: bad configuration or environment at start; 1: the server failed later).

use std::process::ExitCode;

use clap::error::ErrorKind;
use wa_supervisor::config::{Command, Settings};
use wa_supervisor::startup::{Application, Ground};

async fn import(settings: Settings, dry_run: bool) -> ExitCode {
    let ground = match Ground::prepare(&settings).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {}", wa_supervisor::chain(&e));
            return ExitCode::from(2);
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", wa_supervisor::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line naming the variable (value names are the env var names), no secret.
            eprintln!("{}", wa_supervisor::config::refusal_line(&e));
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new()
        .parse_filters(&settings.rust_log)
        .format_timestamp_millis()
        .init();

    if let Some(Command::ImportSessions { dry_run }) = settings.command {
        return actix_web::rt::System::new().block_on(import(settings, dry_run));
    }

    actix_web::rt::System::new().block_on(async move {
        let app = match Application::build(settings).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("error: {}", wa_supervisor::chain(&e));
                return ExitCode::from(2);
            }
        };
        match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("server failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
