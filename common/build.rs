// `sqlx::migrate!` embeds the migrations at compile time; without this, a
// new or edited migration is not picked up until something else in this
// crate changes (sqlx's documented build script).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
