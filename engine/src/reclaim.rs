//! Freeing large state off the workers' path: a window that closes may own millions of small
//! allocations, and freeing them one by one takes a worker tens of milliseconds, during which
//! the window's results wait. [`drop_in_background`] hands such a value to one process-wide
//! thread that drops it.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};

type Garbage = Box<dyn Send>;

/// At most this many values wait for the dropping thread; beyond that the caller drops inline
/// (so a backlog cannot pile up memory).
const QUEUE: usize = 4;

fn sender() -> Option<SyncSender<Garbage>> {
    static SENDER: OnceLock<Option<Mutex<SyncSender<Garbage>>>> = OnceLock::new();
    SENDER
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<Garbage>(QUEUE);
            std::thread::Builder::new()
                .name("runnel:reclaim".to_string())
                .spawn(move || {
                    for garbage in rx {
                        drop(garbage);
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
        .and_then(|tx| tx.lock().ok().map(|tx| tx.clone()))
}

/// Drops `value` on a background thread, or here when that thread is busy with
/// [`QUEUE`] values already (or could not be started).
pub fn drop_in_background<T: Send + 'static>(value: T) {
    let Some(tx) = sender() else {
        return;
    };
    match tx.try_send(Box::new(value)) {
        Ok(()) => {}
        Err(TrySendError::Full(v) | TrySendError::Disconnected(v)) => drop(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn every_value_is_dropped_exactly_once() {
        let dropped = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            drop_in_background(Counted(dropped.clone()));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while dropped.load(Ordering::SeqCst) < 100 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 100);
        // Whatever is left in the queue is dropped too; nothing was dropped twice.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(dropped.load(Ordering::SeqCst), 100);
    }
}
