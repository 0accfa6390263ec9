//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the migration
//! files at compile time but only tracks the ones that existed at the last build.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
