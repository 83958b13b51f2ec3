//! Rebuild when a migration is added or edited: `embed_migrations!` reads `migrations/` at
//! compile time, and cargo does not track those files by itself.
//!
//! `WA_TEST_SKIP_POSTGRES=1` at build time sets the `skip_postgres` cfg: the PostgreSQL tests are
//! then compiled as ignored, so the test run lists them as skipped instead of passing them.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=WA_TEST_SKIP_POSTGRES");
    println!("cargo::rustc-check-cfg=cfg(skip_postgres)");
    if std::env::var("WA_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
        println!("cargo:rustc-cfg=skip_postgres");
    }
}
