//! The Redis server of the kit: it starts, answers, comes back empty after a restart (no
//! persistence), and leaves nothing behind.

use std::time::Instant;

use latchkey_testkit::RedisServer;

#[test]
fn a_server_starts_answers_restarts_empty_and_goes_away() {
    let start = Instant::now();
    let mut server = RedisServer::start();
    eprintln!("RedisServer::start took {:?}", start.elapsed());
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert!(server.url("ttl=5s").starts_with("redis://127.0.0.1:"));
    assert_eq!(server.cli(&["SET", "kept", "7"]), "OK");
    let start = Instant::now();
    server.restart();
    eprintln!("RedisServer::restart took {:?}", start.elapsed());
    assert_eq!(server.cli(&["EXISTS", "kept"]), "0", "a restart without persistence empties the server");
    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(!dir.exists(), "the directory is removed");
}
