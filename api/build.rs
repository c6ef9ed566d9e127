//! Rebuilds the crate when a file of `migrations/` changes. `sqlx::migrate!`
//! embeds those files at compile time, so without this a test could run a
//! binary with an older copy of a migration.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
