//! The key layout of the etcd scope.
//!
//! Every key of a name lives under `{prefix}/n/{escaped name}/`, where the escaped name
//! has no `/` (`%` is written `%25` and `/` is written `%2F`): so the keys of one name
//! are never under another name's prefix, whatever `/` the names contain (`a` and `a/b`
//! are `…/n/a/` and `…/n/a%2Fb/`).
//!
//! A request is the key `{name prefix}q/{lease id, 16 hex digits}/{number, 16 hex}`: its
//! create revision orders the queue and is the grant's fencing token.

/// The part of every key of the scope under `prefix`, up to the names.
pub fn names_root(prefix: &str) -> String {
    if prefix.is_empty() {
        "n/".to_string()
    } else {
        format!("{prefix}/n/")
    }
}

/// The prefix of every key of `name`.
pub fn name_prefix(prefix: &str, name: &str) -> String {
    let mut key = names_root(prefix);
    for c in name.chars() {
        match c {
            '%' => key.push_str("%25"),
            '/' => key.push_str("%2F"),
            c => key.push(c),
        }
    }
    key.push('/');
    key
}

/// The prefix of the requests of `name`, in the order of their create revisions.
pub fn queue_prefix(prefix: &str, name: &str) -> String {
    name_prefix(prefix, name) + "q/"
}

/// The key of request number `number` of session `lease` for `name`.
pub fn request_key(prefix: &str, name: &str, lease: i64, number: u64) -> String {
    format!("{}{:016x}/{number:016x}", queue_prefix(prefix, name), lease as u64)
}

/// The name whose key `key` is (under `prefix`), if it is one of the scope's.
pub fn name_of(prefix: &str, key: &str) -> Option<String> {
    let escaped = key.strip_prefix(&names_root(prefix))?.split('/').next()?;
    let bytes = escaped.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match &bytes[i..] {
            [b'%', b'2', b'5', ..] => {
                name.push(b'%');
                i += 3;
            }
            [b'%', b'2', b'F', ..] => {
                name.push(b'/');
                i += 3;
            }
            [b'%', ..] => return None,
            [byte, ..] => {
                name.push(*byte);
                i += 1;
            }
            [] => unreachable!("i < len"),
        }
    }
    String::from_utf8(name).ok()
}

/// The session lease of a request key.
pub fn lease_of(key: &str) -> Option<i64> {
    let mut parts = key.rsplit('/');
    let _number = parts.next()?;
    u64::from_str_radix(parts.next()?, 16).ok().map(|lease| lease as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_name_is_under_another_names_prefix() {
        let names = ["a", "a/b", "a%2Fb", "a/", "/a", "ab", "a%", "%", "a b", "数据/库"];
        for x in names {
            for y in names.iter().filter(|&&y| y != x) {
                let key = request_key("locks", y, 7, 1);
                assert!(!key.starts_with(&name_prefix("locks", x)), "{y:?}'s key {key} is under {x:?}'s prefix");
            }
        }
    }

    #[test]
    fn keys_give_back_their_name_and_lease() {
        for name in ["a", "a/b", "a%2Fb", "jobs/nightly/", "%", "数据/库"] {
            for prefix in ["", "locks", "team/locks"] {
                let key = request_key(prefix, name, 0x1234_abcd, 3);
                assert_eq!(name_of(prefix, &key).as_deref(), Some(name), "{key}");
                assert_eq!(lease_of(&key), Some(0x1234_abcd), "{key}");
            }
        }
        assert_eq!(request_key("p", "a/b", 255, 2), "p/n/a%2Fb/q/00000000000000ff/0000000000000002");
        assert_eq!(name_of("p", "other/n/a/q/1/1"), None);
    }
}
