//! `status`: a row per holder and per waiter, in queue order; `--quiet NAME`; wide names.

use crate::support::*;

use super::{is_held, quiet_says_held};

#[test]
fn waiters_are_listed_with_their_pids_in_queue_order() {
    let ns = Namespace::new();
    let holder = ns.hold(&["--permits", "2", "--capacity", "3", "gpu"]);
    let first = ns.start_holding(&["--permits", "2", "--capacity", "3", "gpu"]);
    assert!(eventually(|| status_json(&ns, &["gpu"])[0]["waiters"] == 1));
    let second = ns.start_holding(&["--permits", "1", "--capacity", "3", "gpu"]);
    assert!(eventually(|| status_json(&ns, &["gpu"])[0]["waiters"] == 2));
    let entry = &status_json(&ns, &["gpu"])[0];
    let queue = entry["queue"].as_array().unwrap();
    assert_eq!(queue[0]["pid"], first.latchkey_pid(), "{entry}");
    assert_eq!(queue[0]["permits"], 2);
    assert_eq!(queue[1]["pid"], second.latchkey_pid(), "{entry}");
    assert_eq!(queue[1]["permits"], 1, "FIFO: the 1-permit request waits behind the 2-permit one");
    assert!(queue[0]["waiting_for_ms"].as_u64().is_some());

    let (code, stdout, _) = output(ns.latchkey("status").arg("gpu"));
    assert_eq!(code, 0);
    let rows: Vec<Vec<&str>> = stdout.lines().skip(3).map(|l| l.split_whitespace().collect()).collect();
    let (h, w1, w2) =
        (holder.latchkey_pid().to_string(), first.latchkey_pid().to_string(), second.latchkey_pid().to_string());
    assert_eq!(rows[0][..7], ["gpu", "semaphore(3)", "holder", h.as_str(), "2", "of", "3"], "{stdout}");
    assert_eq!(rows[1][..6], ["waiter", "1", w1.as_str(), "2", "of", "3"], "{stdout}");
    assert_eq!(rows[2][..6], ["waiter", "2", w2.as_str(), "1", "of", "3"], "{stdout}");
}

#[test]
fn quiet_answers_held_or_free_with_the_exit_code_only() {
    let ns = Namespace::new();
    assert!(!quiet_says_held(&ns, "job") && !is_held(&ns, "job"));
    let holder = ns.hold(&["job"]);
    assert!(quiet_says_held(&ns, "job") && is_held(&ns, "job"));
    holder.finish();
    assert!(!quiet_says_held(&ns, "job") && !is_held(&ns, "job"));
    let (code, _, stderr) = output(ns.latchkey("status").args(["--quiet", "a", "b"]));
    assert_eq!(code, 64, "--quiet takes one name: {stderr}");
}

#[test]
fn wide_names_keep_the_columns_aligned() {
    let ns = Namespace::new();
    let _wide = ns.hold(&["数据库/迁移"]);
    let _narrow = ns.hold(&["db"]);
    let (code, stdout, _) = output(&mut ns.latchkey("status"));
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().skip(2).collect();
    let column = |line: &str, word: &str| {
        let at = line.find(word).unwrap_or_else(|| panic!("{word} in {line:?}"));
        unicode_width(&line[..at])
    };
    assert_eq!(column(lines[1], "holder"), column(lines[0], "ROLE"), "{stdout}");
    assert_eq!(column(lines[2], "holder"), column(lines[0], "ROLE"), "{stdout}");
}

/// Display width: two columns for the CJK characters used here, one for the rest.
fn unicode_width(text: &str) -> usize {
    text.chars().map(|c| if ('\u{4e00}'..='\u{9fff}').contains(&c) { 2 } else { 1 }).sum()
}
