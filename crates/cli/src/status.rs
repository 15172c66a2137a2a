//! `latchkey status`: who holds and who awaits named locks, as a table or as JSON.

use clap::Args;
use latchkey::{Scope, State, RWLOCK_CAPACITY};
use serde::Serialize;

use crate::duration;

/// The arguments of `latchkey status`.
#[derive(Args)]
pub struct StatusArgs {
    /// The scope to look at: `host:` (this user's namespace), `host:/dir` or `process:`.
    #[arg(long, value_name = "URL", default_value = "host:")]
    scope: String,
    /// Print a JSON object: scope, directory (the host scope's namespace directory), and
    /// locks, an array of objects: name, kind, capacity, in_use, holders (pid, permits,
    /// held_for_ms), waiters, waiting_exclusive, last_token.
    #[arg(long)]
    json: bool,
    /// The names to show; without any, every name that is held or awaited.
    #[arg(value_name = "NAME")]
    names: Vec<String>,
}

/// One name, as `--json` prints it.
#[derive(Serialize)]
struct Entry {
    name: String,
    /// `mutex`, `rwlock`, `semaphore`, or `idle` when nobody has the name open.
    kind: &'static str,
    capacity: u32,
    in_use: u32,
    holders: Vec<HolderEntry>,
    waiters: usize,
    waiting_exclusive: usize,
    last_token: u64,
}

#[derive(Serialize)]
struct HolderEntry {
    pid: u32,
    permits: u32,
    held_for_ms: Option<u64>,
}

impl Entry {
    fn of(state: &State) -> Entry {
        Entry {
            name: state.name.to_string(),
            kind: kind(state.capacity),
            capacity: state.capacity,
            in_use: state.in_use,
            holders: state
                .holders
                .iter()
                .map(|h| HolderEntry {
                    pid: h.pid,
                    permits: h.permits,
                    held_for_ms: h.held_for.map(|d| d.as_millis() as u64),
                })
                .collect(),
            waiters: state.waiters,
            waiting_exclusive: state.waiting_exclusive,
            last_token: state.last_token,
        }
    }
}

fn kind(capacity: u32) -> &'static str {
    match capacity {
        0 => "idle",
        1 => "mutex",
        RWLOCK_CAPACITY => "rwlock",
        _ => "semaphore",
    }
}

/// Prints the states of the names asked for, or of every name in use.
pub fn status(args: StatusArgs) -> anyhow::Result<u8> {
    let scope = Scope::open(&args.scope)?;
    let states = if args.names.is_empty() {
        scope.list()?
    } else {
        args.names.iter().map(|name| scope.inspect(name)).collect::<latchkey::Result<Vec<_>>>()?
    };
    if args.json {
        let report = Report {
            scope: scope.url().to_string(),
            directory: scope.location(),
            locks: states.iter().map(Entry::of).collect(),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    if let Some(directory) = scope.location() {
        println!("namespace directory: {directory}");
    }
    if states.is_empty() {
        println!("no lock is held or awaited in scope {}", scope.url());
    } else {
        print!("{}", table(&states));
    }
    Ok(0)
}

/// What `--json` prints: the scope, where it keeps its state, and its locks.
#[derive(Serialize)]
struct Report {
    scope: String,
    /// The namespace directory of a host scope (absolute); null for other scopes.
    directory: Option<String>,
    locks: Vec<Entry>,
}

/// The states as a table with a header row.
fn table(states: &[State]) -> String {
    let mut rows = vec![["NAME", "KIND", "IN USE", "HOLDERS (pid:permits:held for)", "WAITERS", "LAST TOKEN"]
        .map(String::from)
        .to_vec()];
    for state in states {
        rows.push(vec![
            state.name.to_string(),
            match state.capacity {
                0 | 1 | RWLOCK_CAPACITY => kind(state.capacity).to_string(),
                n => format!("semaphore({n})"),
            },
            in_use(state),
            holders(state),
            match state.waiting_exclusive {
                0 => state.waiters.to_string(),
                writers if state.capacity == RWLOCK_CAPACITY => format!("{} ({writers} writing)", state.waiters),
                _ => state.waiters.to_string(),
            },
            state.last_token.to_string(),
        ]);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, &w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn in_use(state: &State) -> String {
    match state.capacity {
        0 => "-".to_string(),
        RWLOCK_CAPACITY if state.in_use == RWLOCK_CAPACITY => "writer".to_string(),
        RWLOCK_CAPACITY => match state.in_use {
            0 => "0".to_string(),
            1 => "1 reader".to_string(),
            n => format!("{n} readers"),
        },
        capacity => format!("{}/{capacity}", state.in_use),
    }
}

fn holders(state: &State) -> String {
    if state.holders.is_empty() {
        return "-".to_string();
    }
    let holder = |h: &latchkey::Holder| {
        let permits = if h.permits == RWLOCK_CAPACITY { "write".to_string() } else { h.permits.to_string() };
        let held_for = h.held_for.map_or("?".to_string(), duration::show);
        format!("{}:{permits}:{held_for}", h.pid)
    };
    state.holders.iter().map(holder).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use latchkey::{Holder, Name};

    fn state(name: &str, capacity: u32, holders: &[(u32, u32)], waiters: usize) -> State {
        State {
            name: Name::new(name).unwrap(),
            capacity,
            in_use: holders.iter().map(|h| h.1).sum(),
            holders: holders
                .iter()
                .map(|&(pid, permits)| Holder { pid, permits, held_for: Some(Duration::from_millis(1500)) })
                .collect(),
            waiters,
            queue: Vec::new(),
            waiting_exclusive: 0,
            last_token: 9,
        }
    }

    #[test]
    fn the_table_lines_up() {
        let text = table(&[
            state("db", 1, &[(10, 1)], 2),
            state("config", RWLOCK_CAPACITY, &[(11, 1), (12, 1)], 0),
            state("gpu", 4, &[(13, 3)], 0),
            state("idle", 0, &[], 0),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("NAME    KIND"), "{text}");
        assert!(lines[1].contains("mutex") && lines[1].contains("1/1") && lines[1].contains("10:1:1.50s"), "{text}");
        assert!(lines[2].contains("2 readers") && lines[2].contains("11:1:1.50s 12:1:1.50s"), "{text}");
        assert!(lines[3].contains("semaphore(4)") && lines[3].contains("3/4"), "{text}");
        assert!(lines[4].contains("idle"), "{text}");
        let column = lines[0].find("IN USE").unwrap();
        assert!(lines[1..].iter().all(|l| l.chars().nth(column - 1) == Some(' ')), "{text}");
    }

    #[test]
    fn json_has_the_documented_keys() {
        let entries = vec![Entry::of(&state("db", 1, &[(10, 1)], 0))];
        let json: serde_json::Value = serde_json::to_value(&entries).unwrap();
        let entry = &json[0];
        for key in ["name", "kind", "capacity", "in_use", "holders", "waiters", "last_token"] {
            assert!(entry.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(entry["holders"][0]["pid"], 10);
        assert_eq!(entry["holders"][0]["held_for_ms"], 1500);
    }
}
