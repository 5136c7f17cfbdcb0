//! The backend's threads: `threads − 1` workers plus the thread that calls `Pool::run`.
//!
//! A training step makes a few thousand `run` calls (two per GEMM, one per element-wise op), each
//! a few hundred microseconds of work, with short serial stretches on the caller in between. A
//! general pool that parks its workers after each call and blocks the caller while the work runs
//! (what rayon's `install` does from outside its pool) pays two futex wake-ups and a context
//! switch per call, and leaves one core idle while the caller sleeps. Here the caller runs tasks
//! too, and idle workers spin on the job word for a while (`SPIN`) before they park, so a call
//! that follows shortly after another starts without a system call.
//!
//! One job at a time: `claim` packs the job's epoch (high 32 bits) with the next unclaimed task
//! (low 32 bits); a thread takes task `i` with a compare-exchange from `(epoch, i)` to
//! `(epoch, i + 1)`. When every task is done the caller closes the job (`next = CLOSED`) before
//! it returns, so a thread that read the word earlier cannot claim anything of a finished job:
//! the word never returns to a value it had (the epoch only grows). Which thread runs which task
//! does not matter: tasks write disjoint outputs and results never depend on the split.
//!
//! Nested calls (a task that calls `run` on the same pool) run their tasks inline.

use crate::error::{Error, Result};
use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins on the job word before it parks.
const SPIN: Duration = Duration::from_micros(100);

/// How long the caller spins for the last tasks of its job before it parks.
const CALLER_SPIN: Duration = Duration::from_micros(50);

/// `next` of a closed job: no index is below it.
const CLOSED: u64 = u32::MAX as u64;

type Task<'a> = dyn Fn(usize) -> Result<()> + Sync + 'a;

/// The current job's closure with its lifetime erased (see `Pool::run` for why it stays valid
/// while any thread can reach it).
#[derive(Clone, Copy)]
struct JobPtr(*const Task<'static>);

// SAFETY: the closure is `Sync` (shared by reference between threads is what it is for) and the
// pointer is only dereferenced while the job it belongs to is running (module doc, `run`).
unsafe impl Send for JobPtr {}

thread_local! {
    /// Set while this thread runs tasks of a pool (workers always): a nested `run` goes inline.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

struct Shared {
    /// `epoch << 32 | next task` of the current job.
    claim: AtomicU64,
    n_tasks: AtomicUsize,
    job: Mutex<Option<JobPtr>>,
    /// Tasks of the current job that have finished (run, skipped after a failure, or panicked).
    done: AtomicUsize,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// The caller of `run` is parked (or about to park) on `finished`.
    caller_parked: AtomicBool,
    finished: Condvar,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while one of these short critical sections is held cannot leave its data
    // half-updated (each holds a plain value), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Claims and runs tasks of the current job until none is left.
    fn work(&self) {
        loop {
            let w = self.claim.load(Ordering::Acquire);
            let i = w & 0xffff_ffff;
            // `n_tasks` may already belong to a later job; then the job of `w` is finished and
            // closed, and the exchange below fails (module doc).
            if i >= self.n_tasks.load(Ordering::Acquire) as u64 {
                return;
            }
            if self
                .claim
                .compare_exchange_weak(w, w + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.run_one(i as usize);
            }
        }
    }

    fn run_one(&self, i: usize) {
        if !self.failed.load(Ordering::Relaxed) {
            let job = *lock(&self.job);
            // SAFETY: task `i` was claimed from the running job, so the caller of `run` is still
            // inside `run` (it returns only after `done` counts every task, this one included),
            // and the closure it posted is alive.
            let f = job.map(|j| unsafe { &*j.0 });
            match catch_unwind(AssertUnwindSafe(|| f.map_or(Ok(()), |f| f(i)))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.failed.store(true, Ordering::Relaxed);
                    lock(&self.error).get_or_insert(e);
                }
                Err(p) => {
                    self.failed.store(true, Ordering::Relaxed);
                    lock(&self.panic).get_or_insert(p);
                }
            }
        }
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if done == self.n_tasks.load(Ordering::Acquire) && self.caller_parked.load(Ordering::SeqCst)
        {
            let _g = lock(&self.sleep);
            self.finished.notify_all();
        }
    }

    /// The caller's wait for the last tasks of its job: a short spin, then parked (a worker that
    /// was preempted in the middle of a task may take a while).
    fn wait_done(&self, n_tasks: usize) {
        let start = Instant::now();
        let mut spins = 0u32;
        while self.done.load(Ordering::Acquire) < n_tasks {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(256) && start.elapsed() > CALLER_SPIN {
                let mut g = lock(&self.sleep);
                self.caller_parked.store(true, Ordering::SeqCst);
                while self.done.load(Ordering::SeqCst) < n_tasks {
                    g = self.finished.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                self.caller_parked.store(false, Ordering::SeqCst);
                return;
            }
        }
    }

    /// Waits until the job word differs from `seen` (or the pool shuts down): spinning first,
    /// then parked.
    fn wait_change(&self, seen: u64) {
        let start = Instant::now();
        let mut spins = 0u32;
        while self.claim.load(Ordering::Acquire) == seen {
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(256) && start.elapsed() > SPIN {
                let mut g = lock(&self.sleep);
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                while self.claim.load(Ordering::SeqCst) == seen
                    && !self.shutdown.load(Ordering::SeqCst)
                {
                    g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }

    fn worker(&self) {
        IN_TASK.with(|c| c.set(true));
        let mut seen = self.claim.load(Ordering::Acquire);
        while !self.shutdown.load(Ordering::Acquire) {
            self.work();
            // Wait for a word other than the one seen with nothing to claim.
            let now = self.claim.load(Ordering::Acquire);
            if now == seen {
                self.wait_change(seen);
            }
            seen = self.claim.load(Ordering::Acquire);
        }
    }
}

/// A fixed set of threads running the tasks of one call at a time.
pub(crate) struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    /// One job at a time (two threads sharing a backend take turns).
    submit: Mutex<u32>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads` threads in all: the caller of `run` and `threads − 1` workers.
    pub fn new(threads: usize) -> Result<Pool> {
        if threads == 0 {
            return Err(Error::InvalidArgument(
                "CPU backend: threads must be at least 1, got 0".into(),
            ));
        }
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(CLOSED),
            n_tasks: AtomicUsize::new(0),
            job: Mutex::new(None),
            done: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            panic: Mutex::new(None),
            caller_parked: AtomicBool::new(false),
            finished: Condvar::new(),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let mut pool = Pool {
            threads,
            shared,
            submit: Mutex::new(0),
            workers: Vec::new(),
        };
        for i in 1..threads {
            let s = Arc::clone(&pool.shared);
            let h = std::thread::Builder::new()
                .name(format!("edgetune-cpu-{i}"))
                .spawn(move || s.worker())
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "CPU backend: cannot start {threads} threads: {e}"
                    ))
                })?;
            pool.workers.push(h);
        }
        Ok(pool)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0..n_tasks)` on the pool's threads (the caller's included); returns the first
    /// error, or re-raises a task's panic on the caller. Tasks after a failure are skipped.
    pub fn run(&self, n_tasks: usize, f: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
        if n_tasks <= 1 || self.workers.is_empty() || IN_TASK.with(|c| c.get()) {
            return (0..n_tasks).try_for_each(f);
        }
        if n_tasks as u64 >= CLOSED {
            return Err(Error::InvalidArgument(format!(
                "CPU backend: {n_tasks} tasks in one call"
            )));
        }
        let mut epoch = lock(&self.submit);
        *epoch = epoch.wrapping_add(1);
        let s = &*self.shared;
        let task: &Task = &f;
        // SAFETY: only the lifetime is erased. The pointer is cleared below before `run` returns,
        // and no thread dereferences it after that: a task is run only after claiming it from
        // this job, which is closed (no claim can succeed) before the pointer is cleared, and
        // every claimed task has finished (`done == n_tasks`) by then.
        let ptr: *const Task<'static> = unsafe { std::mem::transmute(task as *const Task) };
        *lock(&s.job) = Some(JobPtr(ptr));
        s.n_tasks.store(n_tasks, Ordering::Release);
        s.done.store(0, Ordering::Release);
        s.failed.store(false, Ordering::Release);
        let word = u64::from(*epoch) << 32;
        s.claim.store(word, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = lock(&s.sleep);
            s.wake.notify_all();
        }
        IN_TASK.with(|c| c.set(true));
        s.work();
        s.wait_done(n_tasks);
        IN_TASK.with(|c| c.set(false));
        s.claim.store(word | CLOSED, Ordering::SeqCst);
        *lock(&s.job) = None;
        let panic = lock(&s.panic).take();
        let error = lock(&s.error).take();
        drop(epoch);
        if let Some(p) = panic {
            resume_unwind(p);
        }
        error.map_or(Ok(()), Err)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = lock(&self.shared.sleep);
            self.shared.wake.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_task_runs_once_on_every_pool_size() {
        for threads in 1..=4 {
            let pool = Pool::new(threads).unwrap();
            for n in [0, 1, 2, 3, 7, 64, 1000] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
                .unwrap();
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn many_short_calls_and_idle_gaps() {
        let pool = Pool::new(3).unwrap();
        let total = AtomicUsize::new(0);
        for round in 0..2000 {
            if round % 500 == 0 {
                // Long enough for the workers to park.
                std::thread::sleep(SPIN * 3);
            }
            pool.run(5, |i| {
                total.fetch_add(i + 1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(total.load(Ordering::Relaxed), 2000 * 15);
    }

    #[test]
    fn first_error_is_returned_and_later_calls_work() {
        let pool = Pool::new(2).unwrap();
        let r = pool.run(8, |i| {
            if i == 3 {
                Err(Error::InvalidArgument("task 3".into()))
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(Error::InvalidArgument(m)) if m == "task 3"));
        pool.run(4, |_| Ok(())).unwrap();
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(6, |i| {
                if i == 5 {
                    panic!("boom");
                }
                Ok(())
            })
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(6, |_| {
            n.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!(n.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn nested_calls_run_inline() {
        let pool = Pool::new(2).unwrap();
        let n = AtomicUsize::new(0);
        pool.run(4, |_| {
            pool.run(3, |_| {
                n.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
        })
        .unwrap();
        assert_eq!(n.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn two_callers_share_one_pool() {
        let pool = Pool::new(3).unwrap();
        let n = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..2 {
                sc.spawn(|| {
                    for _ in 0..300 {
                        pool.run(4, |_| {
                            n.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        })
                        .unwrap();
                    }
                });
            }
        });
        assert_eq!(n.load(Ordering::Relaxed), 2 * 300 * 4);
    }
}
