//! Per-query memory limits inside the engine-wide pool.
//!
//! DataFusion bounds memory per `RuntimeEnv`. The engine's pool bounds all queries
//! together; a server also wants one query not to take the whole pool from the others.
//! [`QueryMemoryPool`] gives each query its own allowance and forwards every reservation
//! to the shared pool, so both limits hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};

/// One query's pool: at most `limit` bytes, taken from `shared`.
#[derive(Debug)]
pub struct QueryMemoryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl QueryMemoryPool {
    /// A pool of `limit` bytes drawn from `shared`.
    pub fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> Self {
        QueryMemoryPool { shared, limit, used: AtomicUsize::new(0) }
    }
}

impl std::fmt::Display for QueryMemoryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "query pool ({} of {} bytes) in {}", self.reserved(), self.limit, self.shared)
    }
}

impl MemoryPool for QueryMemoryPool {
    fn name(&self) -> &str {
        "slicetest-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.shared.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.shared.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let before = self.used.fetch_add(additional, Ordering::Relaxed);
        if before + additional > self.limit {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the query needs more than its memory limit of {} MiB (asked for {} more bytes, {} in use)",
                self.limit >> 20,
                additional,
                before
            )));
        }
        self.shared.try_grow(reservation, additional).inspect_err(|_| {
            self.used.fetch_sub(additional, Ordering::Relaxed);
        })
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn both_the_query_limit_and_the_shared_limit_hold() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let a: Arc<dyn MemoryPool> = Arc::new(QueryMemoryPool::new(shared.clone(), 600));
        let b: Arc<dyn MemoryPool> = Arc::new(QueryMemoryPool::new(shared.clone(), 600));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(500).unwrap();
        assert!(ra.try_grow(200).is_err(), "a's own limit");
        assert_eq!(a.reserved(), 500);
        rb.try_grow(400).unwrap();
        assert!(rb.try_grow(150).is_err(), "the shared limit: 500 + 400 + 150 > 1000");
        assert_eq!((b.reserved(), shared.reserved()), (400, 900));
        ra.shrink(500);
        rb.try_grow(150).unwrap();
        drop((ra, rb));
        assert_eq!((a.reserved(), b.reserved(), shared.reserved()), (0, 0, 0));
    }
}
