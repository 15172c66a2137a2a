//! The fenced resources of the tests: keys of a Redis server of their own (not the lock's,
//! which a test may restart empty), written by a script only with a fencing token at least
//! as great as the last one that wrote them.

use redis::aio::ConnectionManager;
use redis::Script;
use tokio::runtime::Runtime;

/// One fenced value: `NAME` and `NAME:token`.
pub struct Fence {
    rt: Runtime,
    connection: ConnectionManager,
    name: String,
    write: Script,
}

impl Fence {
    /// Connects to the server of `url` (a `redis://` URL).
    pub fn connect(url: &str, name: &str) -> Fence {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let connection = rt.block_on(async {
            let client = redis::Client::open(url).expect("the fence's URL");
            ConnectionManager::new(client).await.expect("connect the fence")
        });
        let write = Script::new(
            "local last = tonumber(redis.call('GET', KEYS[2]) or '0')
             if last > tonumber(ARGV[1]) then return 0 end
             redis.call('SET', KEYS[2], ARGV[1])
             redis.call('SET', KEYS[1], ARGV[2])
             return 1",
        );
        Fence { rt, connection, name: name.to_string(), write }
    }

    /// Writes `value` with `token`: whether the resource took it.
    pub fn write(&self, token: u64, value: i64) -> bool {
        let mut connection = self.connection.clone();
        let mut invocation = self.write.key(&self.name);
        invocation.key(format!("{}:token", self.name)).arg(token.to_string()).arg(value);
        let taken: i64 = self.rt.block_on(invocation.invoke_async(&mut connection)).expect("a fenced write");
        taken == 1
    }

    /// The value now (0 if never written).
    pub fn value(&self) -> i64 {
        let mut connection = self.connection.clone();
        let value: Option<i64> =
            self.rt.block_on(redis::cmd("GET").arg(&self.name).query_async(&mut connection)).expect("a read");
        value.unwrap_or(0)
    }

    /// Reads the value with `token` (the resource then refuses every lower token, as a fenced
    /// store checks the token at every access), waits, and unless `lost()` says the hold is
    /// lost by then, writes it plus one with `token` (a read-modify-write that only mutual
    /// exclusion keeps whole): the value written, if the resource took it.
    pub fn increment(&self, token: u64, lost: impl Fn() -> bool) -> Option<i64> {
        let read = Script::new(
            "local last = tonumber(redis.call('GET', KEYS[2]) or '0')
             if last > tonumber(ARGV[1]) then return false end
             redis.call('SET', KEYS[2], ARGV[1])
             return tonumber(redis.call('GET', KEYS[1]) or '0')",
        );
        let mut connection = self.connection.clone();
        let mut invocation = read.key(&self.name);
        invocation.key(format!("{}:token", self.name)).arg(token.to_string());
        let value: Option<i64> = self.rt.block_on(invocation.invoke_async(&mut connection)).expect("a fenced read");
        std::thread::sleep(std::time::Duration::from_millis(10));
        let next = value? + 1;
        if lost() {
            return None;
        }
        self.write(token, next).then_some(next)
    }
}
