//! Process workers: children of this test binary, which runs again as the worker.

mod bad_input;
mod ends;
mod membership;
mod messaging;
mod parent_death;
mod shutdown;
mod spawning;

/// The entry point of a process worker: a child of a test runs this test alone (see
/// `support::CHILD_ARGS`), which runs the worker and exits. In the test run itself it
/// does nothing.
#[test]
fn child() {
    latchkey_cluster::child_main(crate::support::builder());
}
