//! The C ABI from C: `tests/smoke.c` compiled with the machine's `cc` against
//! `include/latchkey.h` (with -Werror: the header is what the library exports) and
//! linked with the `liblatchkey.so` cargo built for this test, run on a fresh host
//! namespace. Also a C holder that another process (the `latchkey` command's peer here: a
//! second C process) must wait for.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where cargo puts `liblatchkey.so` for this build (the test binary is in its `deps/`),
/// built now: cargo builds no `cdylib` for a package's integration tests.
fn library_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test's path");
            let dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
            let target = dir.parent().expect("target/");
            let mut build = Command::new(env!("CARGO"));
            build.args(["build", "-p", "latchkey-c", "--target-dir"]).arg(target);
            if dir.file_name().is_some_and(|profile| profile == "release") {
                build.arg("--release");
            }
            let built = build.status().expect("run cargo");
            assert!(built.success(), "cargo build -p latchkey-c failed");
            dir
        })
        .clone()
}

/// Compiles `source` into `out`, failing the test with cc's output.
fn compile(source: &str, out: &Path) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join(source))
        .arg("-o")
        .arg(out)
        .arg("-L")
        .arg(library_dir())
        .arg("-llatchkey")
        .output()
        .unwrap_or_else(|e| panic!("cannot run cc (the C test needs a C compiler: apt-get install gcc): {e}"));
    assert!(status.status.success(), "cc failed:\n{}", String::from_utf8_lossy(&status.stderr));
}

fn fresh_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("latchkey-c-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

#[test]
fn every_function_of_the_header_works_from_c() {
    assert!(library_dir().join("liblatchkey.so").exists(), "cargo built no liblatchkey.so in {:?}", library_dir());
    let dir = fresh_dir("smoke");
    let program = dir.join("smoke");
    compile("tests/smoke.c", &program);
    let namespace = dir.join("ns");
    let out = Command::new(&program)
        .arg(format!("host:{}", namespace.display()))
        .env("LD_LIBRARY_PATH", library_dir())
        .output()
        .expect("run the C program");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "the C program failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// A C process holds a lock of a host namespace: a Rust program cannot take it, waits, and
/// is granted (with a greater token) when the C process is SIGKILLed.
#[test]
fn a_lock_held_from_c_excludes_rust_until_the_c_process_dies() {
    use std::io::BufRead;
    let dir = fresh_dir("hold");
    let program = dir.join("hold");
    compile("tests/hold.c", &program);
    let url = format!("host:{}", dir.join("ns").display());
    let mut holder = Command::new(&program)
        .args([&url, "c-held"])
        .env("LD_LIBRARY_PATH", library_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the C holder");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let held: u64 = line.trim().strip_prefix("held ").expect("held TOKEN").parse().unwrap();
    let scope = latchkey_rs::Scope::open(&url).unwrap();
    assert!(scope.try_lock("c-held").unwrap().is_none(), "Rust took a lock C holds");
    let waiter = std::thread::spawn(move || {
        let guard = scope.lock_blocking_timeout("c-held", std::time::Duration::from_secs(60)).unwrap();
        guard.fencing_token()
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let granted = waiter.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(granted > held, "token {granted} after {held}");
}

/// The header declares exactly what the library exports (`nm -D`): nothing missing, nothing
/// undeclared.
#[test]
fn the_header_declares_what_the_library_exports() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(library_dir().join("liblatchkey.so"))
        .output()
        .expect("run nm (binutils)");
    let exported: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .filter(|symbol| symbol.starts_with("latchkey_"))
        .map(str::to_string)
        .collect();
    let header = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/latchkey.h")).unwrap();
    let declared: std::collections::BTreeSet<String> = header
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("latchkey_") && header.contains(&format!("{word}(")))
        .map(str::to_string)
        .collect();
    assert_eq!(declared, exported);
}
