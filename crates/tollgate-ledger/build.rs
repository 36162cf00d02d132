//! `sqlx::migrate!` embeds the migration files at compile time but does not tell Cargo to
//! watch the directories, so a new migration would not trigger a rebuild (sqlx's documented
//! remedy is this build script).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations/postgres");
    println!("cargo:rerun-if-changed=../../migrations/sqlite");
}
