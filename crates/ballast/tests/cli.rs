//! The binary's output: a stdout whose reader went away (`ballast check | head -1`) is a normal end
//! of output for every command, never a panic; a server keeps serving when its stdout closes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, PipeWriter, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

fn ballast() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ballast"));
    c.env_remove("BALLAST_LOG");
    c
}

/// The write end of a pipe whose reader has already gone: every write to it fails with EPIPE.
fn closed_pipe() -> PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

fn config() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ballast.toml");
    std::fs::write(
        &path,
        r#"
[providers.primary]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "k"
[providers.backup]
kind = "anthropic"
base_url = "http://127.0.0.1:9"
api_key = "k"
[routes.chat]
targets = ["primary/gpt-4.1", "backup/claude-sonnet-4-5"]
[routes.solo]
targets = ["primary/gpt-4.1"]
"#,
    )
    .unwrap();
    path
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn commands() -> Vec<Vec<String>> {
    let config = config().to_string_lossy().into_owned();
    [
        vec!["check", "-c", config.as_str()],
        vec!["chaos", "list"],
        vec!["chaos", "check", "outage-2026-06-02"],
    ]
    .into_iter()
    .map(|c| c.into_iter().map(str::to_owned).collect())
    .collect()
}

#[test]
fn a_closed_stdout_ends_the_output_not_the_command() {
    for args in commands() {
        let o = ballast()
            .args(&args)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o));
    }
}

#[test]
fn a_reader_that_stops_after_one_line_is_fine() {
    for args in commands() {
        let (reader, writer) = std::io::pipe().unwrap();
        let child = ballast()
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(reader).read_line(&mut first).unwrap();
        assert!(!first.is_empty(), "{args:?}");
        // The reader is gone now, like `head -1`.
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o));
    }
}

#[test]
fn a_command_that_fails_still_says_why_on_stderr() {
    let o = ballast()
        .args(["check", "-c", "/nonexistent/ballast.toml"])
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.starts_with("error: /nonexistent/ballast.toml"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `args` (a server listening on `addr`) with a closed stdout; asserts that it listens and
/// is still there, listening, a moment later.
fn assert_keeps_serving(args: &[&str], addr: SocketAddr) {
    let mut server = Running(
        ballast()
            .args(args)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let start = SystemTime::now();
    let mut listening_since = None;
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut e) = server.0.stderr.take() {
                e.read_to_string(&mut stderr).unwrap();
            }
            panic!("{args:?} ended ({status}):\n{stderr}");
        }
        let elapsed = start.elapsed().unwrap();
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            let since = *listening_since.get_or_insert(elapsed);
            if elapsed >= since + Duration::from_millis(300) {
                return;
            }
        } else {
            assert!(
                listening_since.is_none(),
                "{args:?} stopped listening on {addr}"
            );
            assert!(
                elapsed < Duration::from_secs(20),
                "{args:?} never listened on {addr}"
            );
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

fn free_port() -> SocketAddr {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn a_server_keeps_serving_when_its_stdout_closes() {
    let dir = config();
    let path = dir.with_file_name("serve.toml");
    let toml = std::fs::read_to_string(&dir).unwrap()
        + "[incidents]\nstore = \"\"\n[probes]\ninterval = \"0s\"\n";
    std::fs::write(&path, toml).unwrap();
    let addr = free_port();
    let listen = addr.to_string();
    assert_keeps_serving(
        &["serve", "-c", path.to_str().unwrap(), "--listen", &listen],
        addr,
    );
    let addr = free_port();
    let listen = addr.to_string();
    assert_keeps_serving(&["sim", "--listen", &listen], addr);
}
