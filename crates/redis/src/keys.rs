//! The key layout: every key of one name carries the same hash tag, so that a name's
//! scripts touch one slot (one shard of a Redis Cluster), and no name's keys fall under
//! another's.
//!
//! For the name `n` in a scope of prefix `p`, with `e` the name escaped (`%`, `{`, `}`
//! written `%25`, `%7B`, `%7D`, so that the tag ends where latchkey means it to):
//! - `p:{e}:q`: a sorted set of request ids by token (the queue);
//! - `p:{e}:r`: a hash, request id → what it asks (`permits capacity pid since_ms host`);
//! - `p:{e}:t`: the name's token counter;
//! - `p:{e}:s`: a hash, session → until when (server ms) the session lives for this name;
//! - `p:{e}:c`: the channel a release publishes on.
//!
//! A request id is `session:n`, `n` counting the session's requests.

/// The keys of one name, in the order the scripts take them (`KEYS[1..4]`), and its channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameKeys {
    /// `p:{e}:q`, the queue.
    pub queue: String,
    /// `p:{e}:r`, what each request asks.
    pub asks: String,
    /// `p:{e}:t`, the token counter.
    pub counter: String,
    /// `p:{e}:s`, until when each session lives for this name.
    pub sessions: String,
    /// `p:{e}:c`, the channel of releases.
    pub channel: String,
}

impl NameKeys {
    /// The keys of `name` under `prefix`.
    pub fn new(prefix: &str, name: &str) -> NameKeys {
        let base = format!("{prefix}:{{{}}}", escape(name));
        NameKeys {
            queue: format!("{base}:q"),
            asks: format!("{base}:r"),
            counter: format!("{base}:t"),
            sessions: format!("{base}:s"),
            channel: format!("{base}:c"),
        }
    }

    /// The four keys of the scripts, in order.
    pub fn script_keys(&self) -> [&str; 4] {
        [&self.queue, &self.asks, &self.counter, &self.sessions]
    }
}

/// `name` with `%`, `{` and `}` escaped.
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('{', "%7B").replace('}', "%7D")
}

/// `text` with the characters that `SCAN MATCH` patterns give a meaning (`*?[]\`)
/// escaped, to match itself only.
pub fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The name whose queue key is `key` under `prefix`, if it is one.
pub fn name_of_queue(prefix: &str, key: &str) -> Option<String> {
    let tagged = key.strip_prefix(prefix)?.strip_prefix(":{")?.strip_suffix("}:q")?;
    Some(tagged.replace("%7D", "}").replace("%7B", "{").replace("%25", "%"))
}

/// The hash slot of `key` (CRC16 of its hash tag, modulo 16384), as Redis Cluster computes
/// it: keys of one slot can meet in a script.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(0) | None => bytes,
            Some(len) => &bytes[open + 1..open + 1 + len],
        },
        None => bytes,
    };
    crc16(tagged) % 16384
}

/// CRC16-CCITT (XModem), Redis Cluster's key hash.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_name_is_in_one_slot_and_names_do_not_nest() {
        for name in ["db-migrations", "user/42", "a{b}c", "}{", "%7B", "ünïcode"] {
            let keys = NameKeys::new("lk", name);
            let slots: Vec<u16> = keys.script_keys().iter().map(|k| slot(k)).collect();
            assert!(slots.iter().all(|&s| s == slots[0]), "{name}: {keys:?} in slots {slots:?}");
            assert_eq!(slot(&keys.channel), slots[0]);
            assert_eq!(name_of_queue("lk", &keys.queue).as_deref(), Some(name));
        }
        assert_ne!(NameKeys::new("lk", "a").queue, NameKeys::new("lk", "a}").queue);
        assert_ne!(NameKeys::new("lk", "%7D").queue, NameKeys::new("lk", "}").queue);
    }

    #[test]
    fn slots_are_redis_clusters() {
        // Redis Cluster's specification: "123456789" hashes to 0x31C3; tags are honoured.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
    }
}
