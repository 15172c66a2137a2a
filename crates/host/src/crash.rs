//! Crash points: named steps of the shared-memory protocol after which a process can die.
//!
//! Every write of the protocol to shared state is followed by `crash_point!("step")`,
//! and every operation of the protocol names itself with `crash::op("operation")`, so
//! a point is known as `operation/step` (the same step, in a list helper say, is reached
//! by several operations; nested operations read `outer>inner/step`). Built with the
//! `crash-points` feature:
//!
//! - `LATCHKEY_CRASH_AT=operation/step` (or `operation/step@N`, the N-th time from 1)
//!   makes the process kill itself with SIGKILL at that point;
//! - `LATCHKEY_CRASH_SURVEY=FILE` appends every point the process reaches to FILE, once.
//!
//! The crash-point test (`crates/latchkey/tests/crash_points`) surveys which points its
//! scenarios reach, kills a participant at each in turn, and checks that the others go
//! on and every invariant holds. Without the feature all of this is nothing at all.

/// Marks a step after which the process may die: see the module documentation.
macro_rules! crash_point {
    ($step:literal) => {
        #[cfg(feature = "crash-points")]
        $crate::crash::point($step);
    };
}

/// Names the protocol operation running on this thread until the guard is dropped.
#[inline]
pub(crate) fn op(name: &'static str) -> Op {
    #[cfg(feature = "crash-points")]
    {
        points::CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            let previous = current.len();
            if !current.is_empty() {
                current.push('>');
            }
            current.push_str(name);
            Op { previous }
        })
    }
    #[cfg(not(feature = "crash-points"))]
    {
        let _ = name;
        Op {}
    }
}

/// The guard of [`op`].
pub(crate) struct Op {
    #[cfg(feature = "crash-points")]
    previous: usize,
}

#[cfg(feature = "crash-points")]
impl Drop for Op {
    fn drop(&mut self) {
        points::CURRENT.with(|current| current.borrow_mut().truncate(self.previous));
    }
}

#[cfg(feature = "crash-points")]
pub(crate) use points::point;

#[cfg(feature = "crash-points")]
mod points {
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::io::Write;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Mutex, OnceLock};

    thread_local! {
        /// The operations running on this thread, outermost first: `scrub>release`.
        pub(super) static CURRENT: RefCell<String> = const { RefCell::new(String::new()) };
    }

    struct Config {
        target: Option<(String, u32)>,
        survey: Option<Mutex<(std::fs::File, HashSet<String>)>>,
    }

    fn config() -> &'static Config {
        static CONFIG: OnceLock<Config> = OnceLock::new();
        CONFIG.get_or_init(|| {
            let target = std::env::var("LATCHKEY_CRASH_AT").ok().map(|spec| match spec.split_once('@') {
                Some((point, nth)) => (point.to_string(), nth.parse().unwrap_or(1)),
                None => (spec, 1),
            });
            let survey = std::env::var_os("LATCHKEY_CRASH_SURVEY").and_then(|path| {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path).ok()?;
                Some(Mutex::new((file, HashSet::new())))
            });
            Config { target, survey }
        })
    }

    pub(crate) fn point(step: &'static str) {
        static HITS: AtomicU32 = AtomicU32::new(0);
        let config = config();
        if config.target.is_none() && config.survey.is_none() {
            return;
        }
        let name = CURRENT.with(|current| format!("{}/{step}", current.borrow()));
        if let Some(survey) = &config.survey {
            let mut survey = survey.lock().unwrap_or_else(|e| e.into_inner());
            if survey.1.insert(name.clone()) {
                let _ = writeln!(survey.0, "{name}");
            }
        }
        if let Some((target, nth)) = &config.target {
            if *target == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
                // SAFETY: raising a signal at ourselves is a plain system call.
                unsafe { libc::raise(libc::SIGKILL) };
            }
        }
    }
}
