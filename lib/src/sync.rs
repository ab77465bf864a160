//! Locks that outlive a panic: a thread that panicked while holding one of the
//! project's mutexes leaves the guarded value whole (every critical section is a
//! plain insert, remove or swap), so the others take the lock anyway instead of
//! panicking in turn. And the wait for what nothing wakes a waiter for.

use std::sync::{Mutex, MutexGuard};

/// `m` locked, whether or not a holder panicked.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Looks at `done` every `step` until it holds or `d` has passed; whether it held.
/// For the few waits with nothing to be woken by (a process not crid's child).
pub fn poll_until(
    d: std::time::Duration,
    step: std::time::Duration,
    done: impl Fn() -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + d;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let m = std::sync::Arc::new(std::sync::Mutex::new(1));
        let m2 = std::sync::Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poisoning it");
        })
        .join();
        assert!(m.is_poisoned());
        *super::lock(&m) += 1;
        assert_eq!(*super::lock(&m), 2);
    }
}
