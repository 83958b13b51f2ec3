//! The test binary's one logger: the daemon's records down to debug and everybody else's down to
//! info are kept (tests read them); errors also go to stderr.

use std::sync::{Mutex, OnceLock};

pub struct Capture(Mutex<String>);

impl log::Log for Capture {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= log::Level::Info || meta.target().starts_with("wa_supervisor")
    }
    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("{} {} {}\n", record.level(), record.target(), record.args());
        if record.level() == log::Level::Error {
            eprint!("{line}");
        }
        self.0.lock().unwrap().push_str(&line);
    }
    fn flush(&self) {}
}

impl Capture {
    /// Everything logged so far by any test of this binary.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// Installs the logger once; every test calls this (directly or through its harness).
pub fn captured() -> &'static Capture {
    static LOG: OnceLock<&'static Capture> = OnceLock::new();
    LOG.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(String::new()))));
        log::set_logger(capture).expect("only this module installs a logger");
        log::set_max_level(log::LevelFilter::Debug);
        capture
    })
}
