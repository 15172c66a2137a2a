//! `compare SUITE [--json]`: latchkey against its peers in the same run.
//!
//! Suites: `process`, `host`, `cluster`, `etcd`, `postgres`, `redis`. Each line is one case:
//! ours and one peer in ns per operation, measured in alternating rounds (median of 7).

use latchkey_bench::Row;

mod cluster_suite;
mod etcd_suite;
mod host_suite;
mod postgres_suite;
mod process_suite;
mod redis_suite;

fn main() {
    // A process worker of the cluster suite: this binary again, run by the cluster.
    latchkey_cluster::child_main(cluster_suite::cluster_builder());
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The child processes of the host, cluster, etcd, postgres and redis suites: this
    // binary again, with a hidden first argument.
    if host_suite::child_main(&args)
        || cluster_suite::child_main(&args)
        || etcd_suite::child_main(&args)
        || postgres_suite::child_main(&args)
        || redis_suite::child_main(&args)
    {
        return;
    }
    let json = args.iter().any(|a| a == "--json");
    let suite = args.iter().find(|a| !a.starts_with("--")).map(String::as_str).unwrap_or("process");
    let emit = |row: Row| {
        if json {
            println!("{}", row.to_json());
        } else {
            println!("{}", row.to_text());
        }
    };
    match suite {
        "process" => process_suite::run(&emit),
        "host" => host_suite::run(&emit),
        "cluster" => cluster_suite::run(&emit),
        "etcd" => etcd_suite::run(&emit),
        "postgres" => postgres_suite::run(&emit),
        "redis" => redis_suite::run(&emit),
        other => {
            eprintln!("compare: unknown suite {other:?}; suites: process, host, cluster, etcd, postgres, redis");
            std::process::exit(64);
        }
    }
}
