//! Debian's PostgreSQL, started for a test process: a fresh cluster in a
//! temp dir (`initdb`), one server on a free 127.0.0.1 port, gone with the
//! test. The metadata store over PostgreSQL (issue 23) is tested against
//! it, never against a mock.
//!
//! PostgreSQL refuses to run as root: as root (CI), the cluster belongs to
//! the `postgres` user the package creates, and the server runs as that
//! user (`setpriv`, which execs, so the pid killed is the server's).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Emulator, INSTALL_HINT, describe, free_port};

/// The database role and database the tests use.
pub const USER: &str = "shardgate";

/// A running PostgreSQL cluster.
#[derive(Debug)]
pub struct Postgres {
    pub server: Emulator,
    /// `postgres://shardgate@127.0.0.1:PORT/postgres`.
    pub url: String,
    dir: PathBuf,
    as_root: bool,
    /// How the server was started, to start it again.
    command: String,
    port: u16,
}

impl Postgres {
    /// A fresh cluster on a free port, trusting local connections (the
    /// tests' server binds 127.0.0.1 only).
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "shardgate-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let as_root = is_root();
        if as_root {
            let out = Command::new("chown")
                .arg("postgres:")
                .arg(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "chown {}: {}",
                dir.display(),
                describe(&out)
            );
        }
        let data = dir.join("data");
        let out = as_postgres(as_root, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", describe(&out));
        let port = free_port();
        let server = format!(
            "{}{} -D {} -c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
            if as_root {
                "setpriv --reuid postgres --regid postgres --init-groups -- "
            } else {
                ""
            },
            bin.join("postgres").display(),
            data.display(),
            dir.display(),
        );
        let command = server;
        let server = Emulator::start("postgres", &command, port);
        Self {
            url: format!("postgres://{USER}@127.0.0.1:{port}/postgres"),
            server,
            dir,
            as_root,
            command,
            port,
        }
    }

    /// Stops the server as an operator's restart does (`pg_ctl stop -m
    /// fast`: every session is ended, what was committed stays); its
    /// port refuses connections until [`Postgres::start_again`].
    pub fn stop(&self) {
        let out = as_postgres(self.as_root, &bin_dir().join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["stop", "-m", "fast", "-w", "-t", "30"])
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl stop: {}", describe(&out));
    }

    /// Starts the stopped server again, on its port, with its data.
    pub fn start_again(&mut self) {
        self.server = Emulator::start("postgres", &self.command, self.port);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // An immediate stop lets the server remove its shared memory; the
        // kill is for a server that does not answer.
        let _ = as_postgres(self.as_root, &bin_dir().join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["stop", "-m", "immediate", "-w", "-t", "10"])
            .output();
        self.server.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where Debian keeps the server's programs (`/usr/lib/postgresql/N/bin`,
/// the newest N).
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .max();
    newest.unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server under {}: {INSTALL_HINT}",
            root.display()
        )
    })
}

fn as_postgres(as_root: bool, program: &Path) -> Command {
    if !as_root {
        return Command::new(program);
    }
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid",
            "postgres",
            "--regid",
            "postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
    command
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
