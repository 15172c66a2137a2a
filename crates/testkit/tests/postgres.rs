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

/// A backend busy in a query does not notice its postmaster's death until the query ends,
/// and keeps the shared memory a new postmaster refuses to start beside (CI saw
/// "pre-existing shared memory block ... is still in use"): a restart waits for it.
#[test]
fn a_restart_waits_for_a_busy_backend_of_the_killed_server() {
    let mut server = PostgresServer::start();
    let busy_server = server.url("");
    let busy = std::thread::spawn(move || {
        std::process::Command::new("psql")
            .args([busy_server.as_str(), "-X", "-q", "-c", "select count(*) from generate_series(1, 30000000)"])
            .output()
    });
    // Let the query begin before the postmaster dies.
    let start = Instant::now();
    while server
        .psql("select count(*) from pg_stat_activity where query like '%generate_series%' and pid <> pg_backend_pid()")
        != "1"
    {
        assert!(start.elapsed().as_secs() < 30, "the busy query never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.restart();
    assert_eq!(server.psql("select 1 + 1"), "2", "the server answers after the restart");
    let _ = busy.join();
}
