//! Prints the status page's statements (`common::store::page_queries`) for
//! `bench/dashboard.sh`, which times them with `EXPLAIN (ANALYZE, BUFFERS)`:
//! one per block, `-- name <name> <second parameter or none>` then the SQL,
//! then a line `-- end`.

fn main() {
    for (name, sql, second) in common::store::page_queries() {
        let second = second.map_or("none".to_owned(), |n| n.to_string());
        println!("-- name {name} {second}\n{sql}\n-- end");
    }
}
