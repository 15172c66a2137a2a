//! Integration tests of the cluster runtime (one test binary; each module is a suite).

mod support;

mod bad_input;
mod bounds;
mod events;
mod groups;
mod locks;
mod lookup;
mod messaging;
mod nodes;
mod nodes_review;
mod processes;
mod shutdown;
mod worker;
