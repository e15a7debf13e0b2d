//! Housekeeping statements that take a batch a call (purges, prunes,
//! re-checks), repeated while there is more.

use std::future::Future;
use std::ops::AddAssign;

/// Calls `step` again while it takes a whole `batch`, at most `max_calls`
/// times, and returns the sum: a large backlog is worked off over several
/// passes, not in one long one.
pub(crate) async fn in_batches<N, E, F>(
    max_calls: usize,
    batch: N,
    mut step: impl FnMut() -> F,
) -> Result<N, E>
where
    N: Copy + Default + PartialOrd + AddAssign,
    F: Future<Output = Result<N, E>>,
{
    let mut total = N::default();
    for _ in 0..max_calls {
        let taken = step().await?;
        total += taken;
        if taken < batch {
            break;
        }
    }
    Ok(total)
}
