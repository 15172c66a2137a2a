//! `latchkey status`: who holds and who awaits named locks, as a table or as JSON, or
//! (`--quiet NAME`) only an exit code for `if` in scripts.
//!
//! `status` uses the scope as any other user does: it reads each name under the name's
//! lock, and a hold of a process that has died is freed then, as any waiter would free it.

use clap::Args;
use latchkey::{Scope, State, RWLOCK_CAPACITY};
use serde::Serialize;
use unicode_width::UnicodeWidthStr;

use crate::duration;
use crate::exit::UsageError;

/// The arguments of `latchkey status`.
#[derive(Args)]
pub struct StatusArgs {
    /// The scope to look at: `host:` (this user's namespace), `host:/dir` or `process:`.
    #[arg(long, value_name = "URL", env = "LATCHKEY_SCOPE", default_value = "host:")]
    scope: String,
    /// Print a JSON object: scope, directory (the host scope's namespace directory), and
    /// locks, an array of objects: name, kind, capacity, in_use, holders (pid, permits,
    /// held_for_ms, host, session), waiters, queue (the same for each waiter, in queue
    /// order, with waiting_for_ms), waiting_exclusive, last_token.
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Print nothing; exit 0 if NAME is held, 1 if it is free (one NAME only).
    #[arg(short, long)]
    quiet: bool,
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
    queue: Vec<WaiterEntry>,
    waiting_exclusive: usize,
    last_token: u64,
}

#[derive(Serialize)]
struct HolderEntry {
    pid: u32,
    permits: u32,
    held_for_ms: Option<u64>,
    /// The holder's host and session, where the scope records them (null otherwise).
    host: Option<String>,
    session: Option<String>,
}

#[derive(Serialize)]
struct WaiterEntry {
    pid: u32,
    permits: u32,
    waiting_for_ms: Option<u64>,
    host: Option<String>,
    session: Option<String>,
}

impl Entry {
    fn of(state: &State) -> Entry {
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
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
                    held_for_ms: ms(h.held_for),
                    host: h.identity.host.clone(),
                    session: h.identity.session.clone(),
                })
                .collect(),
            waiters: state.waiters,
            queue: state
                .queue
                .iter()
                .map(|w| WaiterEntry {
                    pid: w.pid,
                    permits: w.permits,
                    waiting_for_ms: ms(w.waiting_for),
                    host: w.identity.host.clone(),
                    session: w.identity.session.clone(),
                })
                .collect(),
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

/// What `--json` prints: the scope, where it keeps its state, and its locks.
#[derive(Serialize)]
struct Report {
    scope: String,
    /// The namespace directory of a host scope (absolute); where a scope over a network
    /// keeps its keys (`etcd <endpoints> under "<prefix>/"`); null for the process scope.
    directory: Option<String>,
    locks: Vec<Entry>,
}

/// Prints the states of the names asked for, or of every name in use.
pub fn status(args: StatusArgs) -> anyhow::Result<u8> {
    if args.quiet && args.names.len() != 1 {
        return Err(UsageError("--quiet takes exactly one NAME".to_string()).into());
    }
    let scope = Scope::open(if args.scope.is_empty() { "host:" } else { &args.scope })?;
    let states = if args.names.is_empty() {
        scope.list()?
    } else {
        args.names.iter().map(|name| scope.inspect(name)).collect::<latchkey::Result<Vec<_>>>()?
    };
    if args.quiet {
        return Ok(if states[0].is_locked() { 0 } else { 1 });
    }
    if args.json {
        let report = Report {
            scope: scope.url().to_string(),
            directory: scope.location(),
            locks: states.iter().map(Entry::of).collect(),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    println!("scope: {}", scope.url());
    match scope.location() {
        Some(directory) if scope.url().starts_with("host:") => println!("namespace directory: {directory}"),
        Some(location) => println!("location: {location}"),
        None => {}
    }
    if states.is_empty() {
        println!("no lock is held or awaited");
    } else {
        print!("{}", table(&states));
    }
    Ok(0)
}

/// The states as a table: a row per holder and per waiter (in queue order), each name's
/// kind and last token on its first row.
fn table(states: &[State]) -> String {
    let mut rows = vec![["NAME", "KIND", "ROLE", "PID", "HOLDS/WANTS", "FOR", "LAST TOKEN"].map(String::from).to_vec()];
    for state in states {
        let first = rows.len();
        let time = |d: Option<std::time::Duration>| d.map_or("?".to_string(), duration::show);
        let pid = |pid: u32| if pid == 0 { "?".to_string() } else { pid.to_string() };
        for holder in &state.holders {
            rows.push(row([
                "",
                "",
                "holder",
                &pid(holder.pid),
                &permits(state, holder.permits),
                &time(holder.held_for),
            ]));
        }
        for (place, waiter) in state.queue.iter().enumerate() {
            let role = format!("waiter {}", place + 1);
            rows.push(row([
                "",
                "",
                &role,
                &pid(waiter.pid),
                &permits(state, waiter.permits),
                &time(waiter.waiting_for),
            ]));
        }
        if rows.len() == first {
            rows.push(row(["", "", "free", "-", "-", "-"]));
        }
        rows[first][0] = state.name.to_string();
        rows[first][1] = match state.capacity {
            0 | 1 | RWLOCK_CAPACITY => kind(state.capacity).to_string(),
            n => format!("semaphore({n})"),
        };
        rows[first][6] = state.last_token.to_string();
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].width()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, &w)| format!("{cell}{}", " ".repeat(w - cell.width()))).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn row(cells: [&str; 6]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).chain([String::new()]).collect()
}

/// What a hold or a request of `permits` is, for the name in `state`.
fn permits(state: &State, permits: u32) -> String {
    match state.capacity {
        RWLOCK_CAPACITY if permits == RWLOCK_CAPACITY => "write".to_string(),
        RWLOCK_CAPACITY => "read".to_string(),
        1 => "exclusive".to_string(),
        capacity => format!("{permits} of {capacity}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use latchkey::{Holder, Name, Waiter};

    fn state(name: &str, capacity: u32, holders: &[(u32, u32)], waiters: &[(u32, u32)]) -> State {
        let mut state = State::idle(Name::new(name).unwrap());
        state.capacity = capacity;
        state.in_use = holders.iter().map(|h| h.1).sum();
        state.holders = holders
            .iter()
            .map(|&(pid, permits)| Holder::new(pid, permits).held_for(Some(Duration::from_millis(1500))))
            .collect();
        state.queue = waiters
            .iter()
            .map(|&(pid, permits)| Waiter::new(pid, permits).waiting_for(Some(Duration::from_millis(200))))
            .collect();
        state.waiters = waiters.len();
        state.last_token = 9;
        state
    }

    #[test]
    fn the_table_has_a_row_per_holder_and_waiter() {
        let text = table(&[
            state("db", 1, &[(10, 1)], &[(20, 1), (21, 1)]),
            state("config", RWLOCK_CAPACITY, &[(11, 1), (12, 1)], &[(13, RWLOCK_CAPACITY)]),
            state("gpu", 4, &[(13, 3)], &[]),
            state("idle", 0, &[], &[]),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 9, "{text}");
        assert!(lines[0].starts_with("NAME    KIND"), "{text}");
        let words = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(words(1), ["db", "mutex", "holder", "10", "exclusive", "1.50s", "9"], "{text}");
        assert_eq!(words(2), ["waiter", "1", "20", "exclusive", "0.20s"], "{text}");
        assert_eq!(words(3), ["waiter", "2", "21", "exclusive", "0.20s"], "{text}");
        assert_eq!(words(4), ["config", "rwlock", "holder", "11", "read", "1.50s", "9"], "{text}");
        assert_eq!(words(6), ["waiter", "1", "13", "write", "0.20s"], "{text}");
        assert_eq!(words(7), ["gpu", "semaphore(4)", "holder", "13", "3", "of", "4", "1.50s", "9"], "{text}");
        assert_eq!(words(8)[..3], ["idle", "idle", "free"], "{text}");
        let column = lines[0].find("ROLE").unwrap();
        assert!(lines[1..].iter().all(|l| l.get(column..).is_some_and(|rest| !rest.starts_with(' '))), "{text}");
    }

    #[test]
    fn wide_characters_keep_the_columns_aligned() {
        let text = table(&[state("数据库", 1, &[(10, 1)], &[]), state("db", 1, &[(11, 1)], &[])]);
        let lines: Vec<&str> = text.lines().collect();
        // Every row's ROLE column starts at the same display column.
        let role_at = |line: &str| {
            let byte = line.find(['h', 'R']).unwrap();
            line[..byte].width()
        };
        assert_eq!(role_at(lines[1]), role_at(lines[0]), "{text}");
        assert_eq!(role_at(lines[2]), role_at(lines[0]), "{text}");
    }

    #[test]
    fn json_has_the_documented_keys() {
        let entries = vec![Entry::of(&state("db", 1, &[(10, 1)], &[(20, 1)]))];
        let json: serde_json::Value = serde_json::to_value(&entries).unwrap();
        let entry = &json[0];
        for key in ["name", "kind", "capacity", "in_use", "holders", "waiters", "queue", "last_token"] {
            assert!(entry.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(entry["holders"][0]["pid"], 10);
        assert_eq!(entry["holders"][0]["held_for_ms"], 1500);
        assert_eq!(entry["queue"][0]["pid"], 20);
        assert_eq!(entry["queue"][0]["waiting_for_ms"], 200);
    }
}
