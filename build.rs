//! Rebuild when a migration is added or edited: `embed_migrations!` reads `migrations/` at
//! compile time, and cargo does not track those files by itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
