//! Where Postgres spends its time in a run on a cluster of the run's own
//! (`StackOptions::private_postgres`, which preloads `pg_stat_statements`
//! with planning tracked): the statements that cost most, planning included.
//! Only what the processes send is tracked (`pg_stat_statements.track` is
//! `top`): the statements of a function or a trigger count to the statement
//! that called it.

use sqlx::PgPool;

#[derive(Debug, sqlx::FromRow)]
pub struct Statement {
    /// The statement's start.
    pub query: String,
    pub calls: i64,
    pub rows: i64,
    pub exec_ms: f64,
    pub plan_ms: f64,
}

/// Counts from now on (and makes the extension, in the run's database).
pub async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(pool)
        .await?;
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(pool)
        .await?;
    Ok(())
}

/// The statements that cost most since [`reset`], costliest first.
pub async fn costliest(pool: &PgPool) -> anyhow::Result<Vec<Statement>> {
    Ok(sqlx::query_as(
        "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query, calls, rows,
                total_exec_time AS exec_ms, total_plan_time AS plan_ms
           FROM pg_stat_statements
          ORDER BY total_exec_time + total_plan_time DESC LIMIT 15",
    )
    .fetch_all(pool)
    .await?)
}
