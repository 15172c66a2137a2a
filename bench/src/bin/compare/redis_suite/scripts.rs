//! The peer "latchkey's scripts, raw": the two scripts an uncontended acquire and release
//! of the scope run (`enqueue.lua` and `release.lua`, from `latchkey_redis::scripts`, on a
//! name's keys from `latchkey_redis::keys::NameKeys`), sent by `EVALSHA` on the raw
//! connection of [`Raw`] from the measuring thread's runtime, with the arguments the scope
//! gives them: what the scope's Lua costs without the scope's thread, tasks and
//! bookkeeping. The session is one of the bench's own ([`SESSION`]), kept alive by each
//! enqueue (as the scope's first request on a name does).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use latchkey_redis::keys::NameKeys;
use latchkey_redis::scripts::Scripts;
use redis::{Script, Value};

use super::{bounded, Raw, RAW_TTL_MS};

/// The session id of the raw scripts (the scope's are 16 random hex digits).
const SESSION: &str = "bench0000000000";

pub struct Latchkey {
    scripts: Scripts,
    prefix: String,
    /// The request numbers of [`SESSION`]: `SESSION:n`.
    requests: u64,
    host: String,
}

impl Latchkey {
    /// latchkey's scripts on the names of `prefix`.
    pub fn new(prefix: &str) -> Latchkey {
        Latchkey { scripts: Scripts::new(), prefix: prefix.to_string(), requests: 0, host: "latchkey-bench".into() }
    }

    /// ns per cycle of `iters` { enqueue (one permit of one); release } on `name`.
    pub fn cycles(&mut self, raw: &mut Raw, iters: u64, name: &str) -> f64 {
        let keys = NameKeys::new(&self.prefix, name);
        let first = self.requests + 1;
        self.requests += iters;
        let (scripts, host, pid) = (&self.scripts, &self.host, std::process::id());
        let connection = &mut raw.connection;
        raw.rt.block_on(async {
            let start = Instant::now();
            for n in first..first + iters {
                // As the scope's `ask`: "pid since_ms host", taken at each request.
                let since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
                let number = n.to_string();
                let args = [SESSION, &number, "1", "1", &format!("{pid} {since} {host}"), "0", &RAW_TTL_MS.to_string()];
                let answer: Value =
                    bounded("enqueue", invoke(&scripts.enqueue, &keys, &args).invoke_async(connection)).await;
                assert!(holds(&answer), "an uncontended request does not hold: {answer:?}");
                let id = format!("{SESSION}:{n}");
                let released: i64 =
                    bounded("release", invoke(&scripts.release, &keys, &[&id, &keys.channel]).invoke_async(connection))
                        .await;
                assert_eq!(released, 1, "the request was not there to release");
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
    }
}

/// `script` on the four keys of a name, with `args`.
fn invoke<'a>(script: &'a Script, keys: &NameKeys, args: &[&str]) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    for key in keys.script_keys() {
        invocation.key(key);
    }
    for arg in args {
        invocation.arg(*arg);
    }
    invocation
}

/// Whether an enqueue answered `{'holds', token}`, with a token.
fn holds(answer: &Value) -> bool {
    match answer {
        Value::Array(words) => {
            matches!(words.first(), Some(Value::BulkString(word)) if word == b"holds")
                && matches!(words.get(1), Some(Value::Int(token)) if *token > 0)
        }
        _ => false,
    }
}
