//! Futures of the scope dropped at every await point leave nothing behind on the server
//! (the scenario of `latchkey-testkit/scenarios/cancel.rs`).

use latchkey::Scope;
use latchkey_testkit::RedisServer;

#[path = "../../../testkit/scenarios/cancel.rs"]
mod scenario;

/// Issue 12: the scenario on the Redis scope (the requests are the members of the names'
/// queues).
#[test]
fn dropped_futures_leave_nothing_behind() {
    let server = RedisServer::start();
    let url = server.url("ttl=3s&prefix=cancel");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let scope = Scope::connect(&url).await.unwrap();
        let other = Scope::connect(&url).await.unwrap();
        let requests = || async {
            let mut all = Vec::new();
            for name in ["job", "ceded"] {
                let queue = latchkey_redis::keys::NameKeys::new("cancel", name).queue;
                let members = server.cli(&["ZRANGE", &queue, "0", "-1"]);
                all.extend(members.lines().filter(|l| !l.is_empty()).map(str::to_string));
            }
            all
        };
        scenario::dropped_futures_leave_nothing_behind(&scope, &other, requests).await;
    });
}
