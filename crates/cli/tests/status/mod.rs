//! `latchkey status`: JSON and table.

use crate::support::*;

#[test]
fn json_lists_held_names_with_the_documented_keys() {
    let ns = Namespace::new();
    assert!(status_json(&ns, &[]).is_empty(), "nothing held yet");

    let job = ns.hold(&["job"]);
    let gpu = ns.hold(&["--permits", "2", "--capacity", "3", "gpu"]);
    let entries = status_json(&ns, &[]);
    assert_eq!(entries.len(), 2, "{entries:?}");
    for entry in &entries {
        for key in ["name", "kind", "capacity", "in_use", "holders", "waiters", "last_token"] {
            assert!(entry.get(key).is_some(), "no {key:?} in {entry}");
        }
        for holder in entry["holders"].as_array().expect("holders is an array") {
            for key in ["pid", "permits", "held_for_ms"] {
                assert!(holder.get(key).is_some_and(|v| v.is_u64()), "no number {key:?} in {holder}");
            }
        }
    }
    let by_name = |name: &str| entries.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(by_name("job")["kind"], "mutex");
    assert_eq!(by_name("job")["capacity"], 1);
    assert_eq!(by_name("job")["holders"][0]["pid"], job.latchkey_pid());
    assert_eq!(by_name("gpu")["capacity"], 3);
    assert_eq!(by_name("gpu")["in_use"], 2);
    assert_eq!(by_name("gpu")["holders"][0]["permits"], 2);
    assert_eq!(by_name("gpu")["holders"][0]["pid"], gpu.latchkey_pid());

    let idle = status_json(&ns, &["never-used"]);
    assert_eq!((idle[0]["name"].as_str(), idle[0]["in_use"].as_u64()), (Some("never-used"), Some(0)));
}

#[test]
fn the_table_shows_holders_and_kinds() {
    let ns = Namespace::new();
    let (code, stdout, _) = output(&mut ns.latchkey("status"));
    assert_eq!(code, 0);
    assert!(stdout.contains("no lock is held"), "{stdout}");

    let job = ns.hold(&["jobs/nightly"]);
    let (code, stdout, stderr) = output(&mut ns.latchkey("status"));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("scope: host:{}", ns.dir().display()), "{stdout}");
    assert_eq!(lines[1], format!("namespace directory: {}", ns.dir().display()), "{stdout}");
    assert!(lines[2].starts_with("NAME"), "{stdout}");
    let row: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(row[..5], ["jobs/nightly", "mutex", "holder", &job.latchkey_pid().to_string(), "exclusive"], "{stdout}");
}
