//! `sqlx::migrate!` embeds the files of `migrations/` at compile time; this
//! rebuilds the crate when one of them changes, so a test never runs a
//! binary with an older copy of a migration.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
