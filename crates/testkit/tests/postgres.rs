//! The PostgreSQL server of the kit: it starts as an unprivileged user, answers, keeps its
//! data across a restart (which ends every session), and leaves nothing behind.

use std::time::Instant;

use latchkey_testkit::PostgresServer;

#[test]
fn a_server_starts_answers_restarts_and_goes_away() {
    let start = Instant::now();
    let mut server = PostgresServer::start();
    eprintln!("PostgresServer::start took {:?}", start.elapsed());
    assert_eq!(server.psql("select 1 + 1"), "2");
    assert!(server.url("ttl=5s").starts_with("postgres://postgres@127.0.0.1:"));
    server.psql("create table kept (n int); insert into kept values (7)");
    let before = server.psql("select pg_postmaster_start_time()");
    let start = Instant::now();
    server.restart();
    eprintln!("PostgresServer::restart took {:?}", start.elapsed());
    assert_ne!(server.psql("select pg_postmaster_start_time()"), before, "a new postmaster");
    assert_eq!(server.psql("select n from kept"), "7", "committed data survives a restart");
    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(!dir.exists(), "the directory is removed");
}
